"""Layerwise sparsity allocation over decoder blocks (pure functions on per-block statistics).

Every allocation returns one sparsity per block whose parameter-weighted mean equals the target (``rebalance``
shifts and clips, found by bisection), so the global budget holds whatever the per-block rule produced.

* ``uniform``: every block at S.
* ``owl`` (Yin et al.): outlier ratio D_l = fraction of Wanda scores above ``M`` times their block mean; D is
  min-max normalized to [0, 2*lambda]; density_l = D'_l - mean(D') + (1 - S).
* ``mrp`` (Gao et al., Maximum Redundancy Pruning): start dense; repeatedly add ``step`` sparsity to the most
  redundant block(s), those with the highest non-outlier ratio: the fraction of the block's weights that are still
  present and not outliers, outliers being scores above ``M`` times the mean score of the current sparse block
  (pruned entries score 0), with the chosen metric. At the dense start this is ``1 - D_l`` (OWL's ratio); pruning
  removes non-outliers and lowers the mean, so redundancy falls as a block is pruned and the loop evens it out. Our
  choices (the paper's values were not verifiable): ``step`` 0.01; blocks within ``tolerance`` of the highest
  ratio are pruned in the same step; a block stops at ``max_sparsity``; ratios are measured on a fixed random
  sample of score entries per linear with their exact per-row ranks (see :class:`BlockScores`). Two ways to
  measure (``mrp_mode``): "measured" (default, the paper's) re-prunes the block at its new sparsity after each step
  and counts on its real remaining weights (:mod:`.mrp_measured`); "simulated" (fast) keeps the dense model's scores
  and simulates the sparse block by its mask.
* ``hessian`` (Zhang et al., aggressive post-training compression): per-block estimated pruning loss at the target
  sparsity, sum over the pruned weights of the OBS loss ``w^2 / [H^-1]_jj``; blocks are clustered into ``levels``
  by 1-D k-means on log10 of that loss; levels get sparsities evenly spaced from S + spread (lowest loss) to
  S - spread (highest loss), then rebalanced (level count, spread and k-means are our choices).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def weighted_mean(values: list[float], weights: list[float]) -> float:
    return sum(v * w for v, w in zip(values, weights)) / sum(weights)


def rebalance(sparsities: list[float], weights: list[float], target: float, lo: float = 0.0,
              hi: float = 0.99) -> list[float]:
    """Shift all sparsities by one constant (clipped to [lo, hi]) so their weighted mean equals ``target``."""
    s = torch.tensor(sparsities, dtype=torch.float64)
    w = torch.tensor(weights, dtype=torch.float64)
    if not lo <= target <= hi:
        raise ValueError(f"target sparsity {target} outside [{lo}, {hi}].")

    def mean_at(c: float) -> float:
        return float(((s + c).clamp(lo, hi) * w).sum() / w.sum())

    a, b = -1.0 - float(s.max()), 1.0 - float(s.min()) + 1.0
    for _ in range(100):
        mid = (a + b) / 2
        if mean_at(mid) < target:
            a = mid
        else:
            b = mid
    return [float(x) for x in (s + (a + b) / 2).clamp(lo, hi)]


def uniform_allocation(n_blocks: int, target: float) -> list[float]:
    return [float(target)] * n_blocks


def owl_allocation(outlier_ratios: list[float], weights: list[float], target: float, lam: float) -> list[float]:
    """OWL: more outliers -> lower sparsity, spread over [S - lam, S + lam]."""
    d = torch.tensor(outlier_ratios, dtype=torch.float64)
    span = float(d.max() - d.min())
    if span == 0 or lam == 0:
        return uniform_allocation(len(outlier_ratios), target)
    d = (d - d.min()) / span * (2 * lam)
    density = d - d.mean() + (1 - target)
    return rebalance([1 - float(x) for x in density], weights, target)


@dataclass
class BlockScores:
    """A fixed sample of one block's importance scores, ordered by the sparsity at which each entry is pruned.

    An entry of rank r (ascending score within its row of ``cols``) is pruned once ``s * cols > r + 1/2``, the
    per-row rule of the unstructured mask; ``prune_at`` holds ``(r + 1/2) / cols`` sorted ascending and ``scores``
    follows that order, so the current sparse block at ``s`` is a suffix of the arrays (numpy: one vectorized pass
    per measurement, no thread pool).
    """

    prune_at: np.ndarray  # (n,) float64, ascending
    scores: np.ndarray  # (n,) float64, same order
    numel: int  # prunable weights of the whole block

    def __post_init__(self) -> None:
        self._suffix_sum = np.concatenate([np.cumsum(self.scores[::-1])[::-1], [0.0]])

    def outlier_ratio(self, sparsity: float, m: float) -> float:
        """Fraction of entries (pruned ones count as zeros) above ``m`` times the mean of the sparse block."""
        return self._counts(sparsity, m)[1] / len(self.scores)

    def non_outlier_ratio(self, sparsity: float, m: float) -> float:
        """Fraction of entries still present and not outliers: the block's remaining redundancy.

        Pruned weights are gone, so they are not counted as redundant ones; this keeps the measure decreasing as a
        block is pruned (``1 - outlier_ratio`` alone rises again near full sparsity, where at most ``1 - s`` entries
        can be outliers, and would pull an over-pruned block further).
        """
        kept, outliers = self._counts(sparsity, m)
        return (kept - outliers) / len(self.scores)

    def _counts(self, sparsity: float, m: float) -> tuple[int, int]:
        n = len(self.scores)
        k = int(np.searchsorted(self.prune_at, sparsity, side="left"))
        mean = self._suffix_sum[k] / n
        return n - k, int(np.count_nonzero(self.scores[k:] > m * mean))


def sample_block_scores(scores: list[torch.Tensor], sample_size: int, generator: torch.Generator) -> BlockScores:
    """Build :class:`BlockScores` from the full score matrices of one block's linears."""
    parts_s, parts_p = [], []
    for sc in scores:
        sc = sc.float().cpu()
        rows, cols = sc.shape
        ranks = torch.empty_like(sc, dtype=torch.int64)
        ranks.scatter_(1, sc.argsort(dim=1), torch.arange(cols).expand(rows, cols).contiguous())
        n = min(sample_size, sc.numel())
        idx = torch.randperm(sc.numel(), generator=generator)[:n]
        parts_s.append(sc.reshape(-1)[idx].double().numpy())
        parts_p.append((ranks.reshape(-1)[idx].double().numpy() + 0.5) / cols)
    prune_at, values = np.concatenate(parts_p), np.concatenate(parts_s)
    order = np.argsort(prune_at, kind="stable")
    return BlockScores(prune_at[order], values[order], sum(s.numel() for s in scores))


@dataclass
class MRPTrace:
    """What the MRP loop did: its steps and the final non-outlier ratio of each block."""

    steps: int
    final_non_outlier: list[float]


def mrp_allocation(blocks: list[BlockScores], target: float, m: float, step: float = 0.01,
                   tolerance: float = 0.0025, max_sparsity: float = 0.95) -> tuple[list[float], MRPTrace]:
    """Maximum Redundancy Pruning: iteratively prune the block(s) with the highest non-outlier ratio."""
    weights = [float(b.numel) for b in blocks]
    total = sum(weights)
    s = [0.0] * len(blocks)
    redundancy = [b.non_outlier_ratio(0.0, m) for b in blocks]
    budget = target * total
    used = 0.0
    steps = 0
    while used < budget - 1e-9:
        open_ = [i for i in range(len(blocks)) if s[i] < max_sparsity - 1e-12]
        if not open_:
            raise ValueError(f"MRP cannot reach sparsity {target} with mrp_max_sparsity {max_sparsity}.")
        best = max(redundancy[i] for i in open_)
        chosen = sorted((i for i in open_ if redundancy[i] >= best - tolerance), key=lambda i: -redundancy[i])
        for i in chosen:
            add = min(step, max_sparsity - s[i], (budget - used) / weights[i])
            if add <= 0:
                break
            s[i] += add
            used += add * weights[i]
            redundancy[i] = blocks[i].non_outlier_ratio(s[i], m)
        steps += 1
    return rebalance(s, weights, target, hi=max_sparsity), MRPTrace(steps, redundancy)


def _kmeans_1d(x: torch.Tensor, k: int, iters: int = 50) -> torch.Tensor:
    """Cluster labels (0 = lowest center) of 1-D k-means initialized at quantiles."""
    k = min(k, int(x.unique().numel()))
    centers = torch.quantile(x, torch.linspace(0, 1, k, dtype=x.dtype))
    for _ in range(iters):
        labels = (x[:, None] - centers[None, :]).abs().argmin(1)
        new = torch.stack([x[labels == j].mean() if (labels == j).any() else centers[j] for j in range(k)])
        if torch.allclose(new, centers):
            break
        centers = new
    order = centers.argsort()
    rank = torch.empty_like(order)
    rank[order] = torch.arange(k)
    return rank[(x[:, None] - centers[None, :]).abs().argmin(1)]


def hessian_allocation(errors: list[float], weights: list[float], target: float, levels: int = 5,
                       spread: float = 0.08) -> tuple[list[float], list[int]]:
    """Log-level clustering of estimated per-block pruning losses; returns (sparsities, level of each block)."""
    e = torch.tensor(errors, dtype=torch.float64)
    if (e <= 0).any() or not torch.isfinite(e).all():
        raise ValueError(f"Estimated pruning losses must be positive and finite, got {errors}.")
    labels = _kmeans_1d(torch.log10(e), levels)
    k = int(labels.max()) + 1
    if k == 1:
        return uniform_allocation(len(errors), target), labels.tolist()
    level_sparsity = torch.linspace(target + spread, target - spread, k, dtype=torch.float64)
    s = [float(level_sparsity[label]) for label in labels]
    return rebalance(s, weights, target), labels.tolist()
