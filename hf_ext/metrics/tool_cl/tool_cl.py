"""Tool-CL: continual-learning metrics (ACC, learning accuracy, BWT, FWT, forgetting) as an ``evaluate`` metric.

Thin wrapper: the math lives in ``hf_ext.tool_cl.metrics``. Imports are absolute (``hf_ext``), never relative,
because this file is also copied into evaluate's module cache, where relative imports do not resolve.
"""

import datasets
import evaluate

from hf_ext.tool_cl.metrics import continual_metrics, exact_match_accuracy, matrix_from_predictions, validate_matrix

_CITATION = """\
@article{huang2024toolcl,
  title     = {Towards Practical Tool Usage for Continually Learning LLMs},
  author    = {Huang, Jerry and Parthasarathi, Prasanna and Rezagholizadeh, Mehdi and Chandar, Sarath},
  journal   = {arXiv preprint arXiv:2404.09339},
  year      = {2024}
}
@inproceedings{lopezpaz2017gem,
  title     = {Gradient Episodic Memory for Continual Learning},
  author    = {Lopez-Paz, David and Ranzato, Marc'Aurelio},
  booktitle = {NeurIPS},
  year      = {2017}
}
@inproceedings{chaudhry2018riemannian,
  title     = {Riemannian Walk for Incremental Learning: Understanding Forgetting and Intransigence},
  author    = {Chaudhry, Arslan and Dokania, Puneet K. and Ajanthan, Thalaiyasingam and Torr, Philip H. S.},
  booktitle = {ECCV},
  year      = {2018}
}
"""

_DESCRIPTION = """\
Continual-learning metrics over an accuracy matrix R (T x T, values in [0, 1]): R[i][j] is the accuracy on task j
after training on tasks 0..i; b[j] is the untrained model's accuracy on task j (optional, for FWT).
average_accuracy = (1/T) sum_j R[T-1][j]; learning_accuracy = (1/T) sum_j R[j][j];
backward_transfer (GEM) = (1/(T-1)) sum_{j<T-1} (R[T-1][j] - R[j][j]);
forward_transfer (GEM) = (1/(T-1)) sum_{j>=1} (R[j-1][j] - b[j]);
forgetting (Chaudhry) = (1/(T-1)) sum_{j<T-1} (max_{i<T-1} R[i][j] - R[T-1][j]), not clipped at 0.
With T = 1, BWT, FWT and forgetting are undefined (None); FWT is None without a baseline. Instead of a matrix you
may give per-stage predictions and per-task references: accuracies are then exact matches after stripping
whitespace.
"""

_KWARGS_DESCRIPTION = """
Args:
    accuracy_matrix (`list` of `list` of `float`, optional): R, T rows (stages) of T accuracies in [0, 1].
    baseline (`list` of `float`, optional): b, the untrained model's accuracy on each of the T tasks (for FWT).
    stage_predictions (`list` of `list` of `list` of `str`, optional): instead of the matrix: the answers on task
        j's test set after stage i, `stage_predictions[i][j]`.
    task_references (`list` of `list` of `str`, optional): the reference answers of each task's test set.
    baseline_predictions (`list` of `list` of `str`, optional): the untrained model's answers per task (for FWT).
Returns:
    average_accuracy (`float`): mean of the last row.
    learning_accuracy (`float`): mean of the diagonal.
    backward_transfer (`float` or `None`): GEM BWT; negative means forgetting.
    forward_transfer (`float` or `None`): GEM FWT; None without a baseline.
    forgetting (`float` or `None`): Chaudhry's max-based forgetting.
Examples:
    Three tasks; task 0 is partly forgotten after task 2, and the untrained model scores 0.1 everywhere:

    >>> import evaluate
    >>> import hf_ext  # installs the module where evaluate.load finds it offline
    >>> tool_cl = evaluate.load("tool_cl")
    >>> R = [[0.8, 0.2, 0.1],
    ...      [0.6, 0.9, 0.2],
    ...      [0.5, 0.7, 1.0]]
    >>> out = tool_cl.compute(accuracy_matrix=R, baseline=[0.1, 0.1, 0.1])
    >>> {k: round(v, 4) for k, v in out.items()}
    {'average_accuracy': 0.7333, 'learning_accuracy': 0.9, 'backward_transfer': -0.25, 'forward_transfer': 0.1,
     'forgetting': 0.25}

    Two tasks (each transfer is one difference), no baseline:

    >>> tool_cl.compute(accuracy_matrix=[[1.0, 0.0], [0.5, 1.0]])
    {'average_accuracy': 0.75, 'learning_accuracy': 1.0, 'backward_transfer': -0.5, 'forward_transfer': None,
     'forgetting': 0.5}

    One task: nothing to transfer or forget:

    >>> tool_cl.compute(accuracy_matrix=[[0.5]], baseline=[0.25])
    {'average_accuracy': 0.5, 'learning_accuracy': 0.5, 'backward_transfer': None, 'forward_transfer': None,
     'forgetting': None}

    From per-stage predictions (exact match after stripping whitespace):

    >>> refs = [["49", "1.86"], ["Paris", "olleh"]]
    >>> preds = [[["49", "1.9"], ["Lyon", "x"]],
    ...          [["49", " 1.86 "], ["Paris", "olleh"]]]
    >>> tool_cl.compute(stage_predictions=preds, task_references=refs,
    ...                 baseline_predictions=[["0", "0"], ["Paris", ""]])
    {'average_accuracy': 1.0, 'learning_accuracy': 0.75, 'backward_transfer': 0.5, 'forward_transfer': -0.5,
     'forgetting': -0.5}

    Row by row, as training proceeds (`add` one row of R per stage, then `compute`):

    >>> tool_cl.add(accuracy_matrix=[1.0, 0.0])
    >>> tool_cl.add(accuracy_matrix=[0.5, 1.0])
    >>> tool_cl.compute(baseline=[0.0, 0.5])["forward_transfer"]
    -0.5

    Bad input is refused with a clear error:

    >>> tool_cl.compute(accuracy_matrix=[[1.0, 0.5], [0.5]])
    Traceback (most recent call last):
    ...
    ValueError: accuracy_matrix is ragged: row lengths [2, 1]; every row needs one accuracy per task.
    >>> tool_cl.compute(accuracy_matrix=[[0.5, 1.2], [0.1, 0.3]])
    Traceback (most recent call last):
    ...
    ValueError: accuracy_matrix[0][1] must be an accuracy in [0, 1], got 1.2.
    >>> tool_cl.compute(accuracy_matrix=[[0.5, 0.5], [0.5, 0.5]], baseline=[0.1])
    Traceback (most recent call last):
    ...
    ValueError: baseline has 1 values but the accuracy matrix has 2 tasks.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ToolCl(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"accuracy_matrix": datasets.Sequence(datasets.Value("float64"))}),
            reference_urls=["https://arxiv.org/abs/2404.09339", "https://arxiv.org/abs/1706.08840"],
        )

    def compute(self, *, accuracy_matrix=None, baseline=None, stage_predictions=None, task_references=None,
                baseline_predictions=None, **kwargs):
        """As :meth:`evaluate.EvaluationModule.compute`; per-stage predictions are turned into the matrix first
        (evaluate stores one feature set, the matrix rows, so the conversion happens before it)."""
        if stage_predictions is not None or task_references is not None or baseline_predictions is not None:
            if accuracy_matrix is not None:
                raise ValueError("Give accuracy_matrix or stage_predictions + task_references, not both.")
            if stage_predictions is None or task_references is None:
                raise ValueError("stage_predictions and task_references must be given together.")
            accuracy_matrix = matrix_from_predictions(stage_predictions, task_references)
            if baseline_predictions is not None:
                if baseline is not None:
                    raise ValueError("Give baseline or baseline_predictions, not both.")
                if len(baseline_predictions) != len(task_references):
                    raise ValueError(f"baseline_predictions has {len(baseline_predictions)} tasks; expected "
                                     f"{len(task_references)}.")
                baseline = [exact_match_accuracy(p, r, where=f"baseline, task {j}: ")
                            for j, (p, r) in enumerate(zip(baseline_predictions, task_references))]
        if accuracy_matrix is not None:
            validate_matrix(accuracy_matrix)  # our message, before evaluate's arrow casting
        return super().compute(accuracy_matrix=accuracy_matrix, baseline=baseline, **kwargs)

    def _compute(self, accuracy_matrix, baseline=None):
        return continual_metrics(accuracy_matrix, baseline)
