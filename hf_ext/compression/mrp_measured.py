"""MRP's redundancy measured on the real sparse block (the paper's procedure; ``mrp_mode="measured"``).

MRP (Gao et al.) prunes a step more in the most redundant block(s) and then *re-measures* the non-outlier ratio on
the current sparse model. :class:`MeasuredBlock` does that for one decoder block: at sparsity ``s`` each of its
linears is pruned with the chosen metric exactly as the pruning pass would prune it (per-row masks for magnitude /
Wanda; SparseGPT's sweep, weight update included, for sparsegpt; ALPS for alps), the metric's scores are recomputed
on the resulting weights (pruned entries score 0) and the ratio is counted on every weight, not a sample.

Our choice, stated: the block's inputs are those of the dense model (the statistics pass), not of the already
pruned blocks before it; re-running the calibration forward after every step would cost a model pass per step.
Each measurement costs one pruning of the block (cached per sparsity; SparseGPT's Cholesky factors are computed once),
so the allocation costs about ``target * n_blocks / mrp_step`` block prunings: minutes for SparseGPT on a 270 M model
on a small CPU, far more for ALPS; the block's weights, column norms and (for
sparsegpt) Hessians are kept on the CPU until the allocation is done: ``n_blocks * sum(in^2)`` floats more than the
simulated mode.
"""

from __future__ import annotations

import torch

from .alps import alps_prune
from .metrics import importance, make_mask
from .sparsegpt import inverse_cholesky, inverse_hessian_diag, obs_sweep


def metric_scores(weight: torch.Tensor, metric: str, col_norm: torch.Tensor | None,
                  hinv_diag: torch.Tensor | None) -> torch.Tensor:
    """Per-weight importance for allocation: |W|, Wanda, |w| / sqrt([H^-1]_jj) for sparsegpt (the square root
    of the OBS saliency, our choice so it is on the scale of the other two), and Wanda's for alps (ALPS ranks
    ``|W| sqrt(diag H)``, proportional to Wanda's score)."""
    if metric == "sparsegpt":
        return weight.float().abs() / hinv_diag.sqrt()[None, :]
    return importance(weight, "wanda" if metric == "alps" else metric, col_norm)


class MeasuredBlock:
    """One block's linears and input statistics; :meth:`non_outlier_ratio` prunes them at ``s`` and measures."""

    def __init__(self, weights: list[torch.Tensor], col_norms: list[torch.Tensor],
                 hessians: list[torch.Tensor | None], metric: str, dampening: float = 0.01, blocksize: int = 128):
        self.weights = [w.detach().float().cpu().clone() for w in weights]
        self.col_norms = [c.float().cpu() for c in col_norms]
        self.hessians = [None if h is None else h.float().cpu() for h in hessians]
        self.metric, self.dampening, self.blocksize = metric, dampening, blocksize
        self.hinv = ([inverse_hessian_diag(h, dampening) for h in self.hessians] if metric == "sparsegpt"
                     else [None] * len(weights))
        # SparseGPT's inverse-Hessian factor does not depend on the sparsity: factor once, sweep per measurement
        self._factors = ([inverse_cholesky(h, w, dampening) for w, h in zip(self.weights, self.hessians)]
                         if metric == "sparsegpt" else [None] * len(weights))
        self.numel = sum(w.numel() for w in self.weights)
        self._cache: dict[float, tuple[int, torch.Tensor]] = {}

    def _pruned_scores(self, sparsity: float) -> tuple[int, torch.Tensor]:
        key = round(float(sparsity), 9)
        if key not in self._cache:
            kept, parts = 0, []
            for w, c, h, d, u in zip(self.weights, self.col_norms, self.hessians, self.hinv, self._factors):
                if self.metric == "sparsegpt":
                    new, keep = obs_sweep(w.clone(), u, sparsity, None, self.blocksize)
                elif self.metric == "alps":
                    new, keep = alps_prune(w, h, sparsity, dampening=self.dampening)
                else:
                    keep = make_mask(importance(w, self.metric, c), sparsity)
                    new = w * keep
                kept += int(keep.sum())
                parts.append(torch.where(keep, metric_scores(new, self.metric, c, d), 0.0).reshape(-1))
            self._cache[key] = (kept, torch.cat(parts))
        return self._cache[key]

    def non_outlier_ratio(self, sparsity: float, m: float) -> float:
        """Fraction of the block's weights still present and not outliers (score > ``m`` x the block's mean)."""
        kept, scores = self._pruned_scores(sparsity)
        outliers = int((scores > m * scores.double().mean()).sum())
        return (kept - outliers) / scores.numel()
