"""Pruning scores and masks (pure functions).

* magnitude: ``|W|``; Wanda: ``|W| * ||x_j||`` with ``||x_j|| = sqrt(mean over tokens of x_j^2)``.
* Unstructured masks prune the lowest scores of each output row (Wanda's comparison group; for magnitude this is
  our choice, per row rather than per layer, so every metric shares one mask rule).
* N:M masks keep the N highest scores of every M consecutive input columns of a row.

Masks are boolean ``keep`` tensors: True where the weight stays.
"""

from __future__ import annotations

import torch


def importance(weight: torch.Tensor, metric: str, col_norm: torch.Tensor | None = None) -> torch.Tensor:
    """Score of every weight (higher = more important) for "magnitude" or "wanda"."""
    w = weight.detach().float().abs()
    if metric == "magnitude":
        return w
    if metric == "wanda":
        if col_norm is None:
            raise ValueError("The wanda metric needs the input column norms of the layer.")
        return w * col_norm.float().to(w.device)[None, :]
    raise ValueError(f"importance() covers 'magnitude' and 'wanda', got {metric!r}.")


def row_prune_count(cols: int, sparsity: float) -> int:
    """Weights pruned in each row of ``cols`` inputs at ``sparsity`` (rounded to the nearest integer)."""
    return min(cols, int(round(sparsity * cols)))


def row_prune_counts(rows: int, cols: int, sparsity: float) -> torch.Tensor:
    """Pruned weights per row: ``floor(s * cols)`` plus one in the first rows until the layer holds exactly
    ``round(s * rows * cols)`` zeros (so rounding never drifts the achieved sparsity on narrow layers)."""
    total = min(rows * cols, int(round(sparsity * rows * cols)))
    base = total // rows
    counts = torch.full((rows,), base, dtype=torch.int64)
    counts[: total - base * rows] += 1
    return counts


def unstructured_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep mask pruning the lowest scores of every row (``row_prune_counts`` of them)."""
    rows, cols = scores.shape
    counts = row_prune_counts(rows, cols, sparsity).to(scores.device)
    if not int(counts.max()):
        return torch.ones_like(scores, dtype=torch.bool)
    order = scores.argsort(dim=1, stable=True)
    positions = torch.arange(cols, device=scores.device).expand(rows, cols).contiguous()
    ranks = torch.empty_like(order).scatter_(1, order, positions)
    return ranks >= counts[:, None]


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep mask with exactly ``n`` kept weights in every ``m`` consecutive input columns of each row."""
    rows, cols = scores.shape
    if cols % m:
        raise ValueError(f"N:M with M={m} needs the input size ({cols}) to be a multiple of {m}.")
    groups = scores.reshape(rows, cols // m, m)
    idx = torch.topk(groups, n, dim=-1).indices
    keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, idx, True)
    return keep.reshape(rows, cols)


def make_mask(scores: torch.Tensor, sparsity: float, nm: tuple[int, int] | None = None) -> torch.Tensor:
    return nm_mask(scores, *nm) if nm is not None else unstructured_mask(scores, sparsity)


def check_nm(keep: torch.Tensor, n: int, m: int) -> bool:
    """True when no group of ``m`` consecutive inputs keeps more than ``n`` weights."""
    rows, cols = keep.shape
    return bool((keep.reshape(rows, cols // m, m).sum(-1) <= n).all())


def outlier_ratio(scores: torch.Tensor, m: float) -> float:
    """Fraction of entries above ``m`` times the mean entry (OWL's layerwise outlier distribution)."""
    flat = scores.float().reshape(-1)
    return float((flat > m * flat.mean()).float().mean())
