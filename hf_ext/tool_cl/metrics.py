"""Continual-learning metrics over an accuracy matrix: pure functions, no model, no ``evaluate``.

``R[i][j]`` is the accuracy on task ``j`` after training on tasks ``0..i`` (``T x T``, rows = training stages,
columns = tasks, values in ``[0, 1]``); ``b[j]`` is the accuracy of the untrained model on task ``j``. With ``T``
tasks (the formulas are the standard ones, GEM / Chaudhry; the paper gives none, so every denominator is stated):

- ``average_accuracy`` (ACC) = ``(1/T) * sum_j R[T-1][j]`` (the last row's mean).
- ``learning_accuracy`` (LA) = ``(1/T) * sum_j R[j][j]`` (the diagonal's mean: accuracy just after learning a task).
- ``backward_transfer`` (BWT, GEM) = ``(1/(T-1)) * sum_{j < T-1} (R[T-1][j] - R[j][j])``; negative = forgetting.
- ``forward_transfer`` (FWT, GEM) = ``(1/(T-1)) * sum_{j >= 1} (R[j-1][j] - b[j])``; needs ``b``.
- ``forgetting`` (Chaudhry et al. 2018) = ``(1/(T-1)) * sum_{j < T-1} (max_{i < T-1} R[i][j] - R[T-1][j])``; the max
  runs over every earlier stage, including stages before task ``j`` was trained (as in Chaudhry's definition), and
  the result is not clipped at 0 (a task that improved at the end contributes a negative term).

The last task is excluded from BWT and forgetting (nothing was trained after it) and the first from FWT (nothing
was trained before it), hence the ``T - 1`` denominators. Edges: with ``T = 1`` BWT, FWT and forgetting are
undefined and returned as ``None``; with ``T = 2`` each is a single difference (``R[1][0] - R[0][0]``,
``R[0][1] - b[1]``, ``R[0][0] - R[1][0]``). FWT is ``None`` without a baseline. (Avalanche divides BWT/forgetting by
the number of tasks seen so far and mammoth reports FWT against a random-init model: our numbers follow GEM.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

METRIC_NAMES = ("average_accuracy", "learning_accuracy", "backward_transfer", "forward_transfer", "forgetting")


def validate_matrix(matrix: Sequence[Sequence[float]], name: str = "accuracy_matrix") -> list[list[float]]:
    """``matrix`` as a square list of float lists, every value a finite number in ``[0, 1]``.

    Raises:
        ValueError: empty, ragged or non-square, or a value that is not a number in ``[0, 1]``.
    """
    if hasattr(matrix, "tolist") and not isinstance(matrix, (str, bytes)):  # numpy arrays, torch tensors
        matrix = matrix.tolist()
    if matrix is None or isinstance(matrix, (str, bytes)) or not hasattr(matrix, "__len__") or len(matrix) == 0:
        raise ValueError(f"{name} must be a non-empty T x T list of lists, got {matrix!r}.")
    rows = [list(r) if isinstance(r, Sequence) and not isinstance(r, (str, bytes)) else r for r in matrix]
    if any(not isinstance(r, list) for r in rows):
        raise ValueError(f"{name} must be a list of rows (lists), got {matrix!r}.")
    t = len(rows)
    lengths = [len(r) for r in rows]
    if len(set(lengths)) != 1:
        raise ValueError(f"{name} is ragged: row lengths {lengths}; every row needs one accuracy per task.")
    if lengths[0] != t:
        raise ValueError(f"{name} must be square (T stages x T tasks), got {t} rows of {lengths[0]}.")
    out = []
    for i, r in enumerate(rows):
        out.append([_accuracy(v, f"{name}[{i}][{j}]") for j, v in enumerate(r)])
    return out


def _accuracy(v, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) and not hasattr(v, "__float__"):
        raise ValueError(f"{where} must be a number in [0, 1], got {v!r}.")
    x = float(v)
    if not math.isfinite(x) or not 0.0 <= x <= 1.0:
        raise ValueError(f"{where} must be an accuracy in [0, 1], got {v!r}.")
    return x


def validate_baseline(baseline: Sequence[float], num_tasks: int) -> list[float]:
    """The untrained row ``b`` as a list of ``num_tasks`` accuracies in ``[0, 1]``.

    Raises:
        ValueError: wrong length or a value outside ``[0, 1]``.
    """
    if hasattr(baseline, "tolist") and not isinstance(baseline, (str, bytes)):
        baseline = baseline.tolist()
    if isinstance(baseline, (str, bytes)) or not isinstance(baseline, Sequence):
        raise ValueError(f"baseline must be a list of {num_tasks} accuracies, got {baseline!r}.")
    if len(baseline) != num_tasks:
        raise ValueError(f"baseline has {len(baseline)} values but the accuracy matrix has {num_tasks} tasks.")
    return [_accuracy(v, f"baseline[{j}]") for j, v in enumerate(baseline)]


def average_accuracy(matrix) -> float:
    """ACC: mean of the last row, ``(1/T) sum_j R[T-1][j]``."""
    r = validate_matrix(matrix)
    return sum(r[-1]) / len(r)


def learning_accuracy(matrix) -> float:
    """LA: mean of the diagonal, ``(1/T) sum_j R[j][j]``."""
    r = validate_matrix(matrix)
    return sum(r[j][j] for j in range(len(r))) / len(r)


def backward_transfer(matrix) -> float | None:
    """BWT (GEM): ``(1/(T-1)) sum_{j<T-1} (R[T-1][j] - R[j][j])``; ``None`` when ``T = 1``."""
    r = validate_matrix(matrix)
    t = len(r)
    if t < 2:
        return None
    return sum(r[t - 1][j] - r[j][j] for j in range(t - 1)) / (t - 1)


def forward_transfer(matrix, baseline) -> float | None:
    """FWT (GEM): ``(1/(T-1)) sum_{j>=1} (R[j-1][j] - b[j])``; ``None`` when ``T = 1`` or ``baseline`` is None."""
    r = validate_matrix(matrix)
    t = len(r)
    if baseline is None:
        return None
    b = validate_baseline(baseline, t)
    if t < 2:
        return None
    return sum(r[j - 1][j] - b[j] for j in range(1, t)) / (t - 1)


def forgetting(matrix) -> float | None:
    """Forgetting (Chaudhry): ``(1/(T-1)) sum_{j<T-1} (max_{i<T-1} R[i][j] - R[T-1][j])``; ``None`` when ``T = 1``."""
    r = validate_matrix(matrix)
    t = len(r)
    if t < 2:
        return None
    return sum(max(r[i][j] for i in range(t - 1)) - r[t - 1][j] for j in range(t - 1)) / (t - 1)


def continual_metrics(matrix, baseline=None) -> dict[str, float | None]:
    """All five metrics of :data:`METRIC_NAMES` (validated once; ``None`` where undefined)."""
    r = validate_matrix(matrix)
    if baseline is not None:
        validate_baseline(baseline, len(r))
    return {
        "average_accuracy": average_accuracy(r),
        "learning_accuracy": learning_accuracy(r),
        "backward_transfer": backward_transfer(r),
        "forward_transfer": forward_transfer(r, baseline),
        "forgetting": forgetting(r),
    }


def normalize_answer(text: str) -> str:
    """Exact match compares answers after stripping surrounding whitespace (nothing else: case counts)."""
    return str(text).strip()


def exact_match_accuracy(predictions: Sequence[str], references: Sequence[str], where: str = "") -> float:
    """Fraction of ``predictions`` equal to ``references`` after :func:`normalize_answer`.

    Raises:
        ValueError: different lengths, or no examples.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{where}predictions has {len(predictions)} items but references has {len(references)}.")
    if len(references) == 0:
        raise ValueError(f"{where}no examples: an accuracy needs at least one reference.")
    hits = sum(normalize_answer(p) == normalize_answer(r) for p, r in zip(predictions, references))
    return hits / len(references)


def matrix_from_predictions(stage_predictions, task_references) -> list[list[float]]:
    """The accuracy matrix from per-stage predictions: ``stage_predictions[i][j]`` are the answers on task ``j``'s
    test set after training stage ``i`` (``T x T`` lists of strings), ``task_references[j]`` that test set's answers.

    Raises:
        ValueError: shapes that do not match (not ``T`` stages of ``T`` tasks, or per-task lengths that differ).
    """
    t = len(task_references)
    if t == 0:
        raise ValueError("task_references must hold one list of reference answers per task, got none.")
    if len(stage_predictions) != t:
        raise ValueError(f"stage_predictions has {len(stage_predictions)} stages but task_references has {t} tasks.")
    rows = []
    for i, stage in enumerate(stage_predictions):
        if len(stage) != t:
            raise ValueError(f"stage_predictions[{i}] has {len(stage)} tasks; expected {t}.")
        rows.append([exact_match_accuracy(stage[j], task_references[j], where=f"stage {i}, task {j}: ")
                     for j in range(t)])
    return rows
