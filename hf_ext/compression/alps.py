"""ALPS (Meng, Behdin, Wang, Mazumder, NeurIPS 2024): ADMM for the support, then conjugate gradient on it.

Layer-wise problem: ``min ||X W0^T - X W^T||^2`` with at most ``k`` nonzeros in the whole layer (one budget per
layer, not per row). Re-derived from the paper and its public code (mazumder-lab/ALPS), in our ``(out, in)`` layout:

* preprocessing: ``H`` damped by ``dampening * mean(diag H)`` and scaled to unit diagonal (``W`` scaled by
  ``sqrt(diag H)``), so ranking ``|W|`` in the scaled space is Wanda's ``|W| * ||x||``;
* ADMM on ``B`` (dense), ``D`` (sparse) and the multiplier ``V``::

      B = (W0 H - V + rho D) (H + rho I)^-1      (one eigendecomposition of H serves every rho)
      D = top-k of |B + V / rho|                (top-N of every M for N:M)
      V = V + rho (B - D)

* ``rho`` starts at 0.1; every 3 iterations, with ``s`` the support entries that changed: ``s/k > 0.1`` -> x1.3,
  ``> 0.005`` -> x1.2, any change -> x1.1 (cap 1e6); stop at ``max_iters`` (300) or, after 30, once ``s/k < 3e-4``;
* final support = top-k of ``B``; the kept weights are then solved on it by conjugate gradient
  (:func:`.sparsegpt.refit_on_mask`, ``cg_iters`` = 10, warm started).

Memory: a few copies of the weight plus the ``(in, in)`` eigenvectors, as SparseGPT. Cost: two ``(out, in) x (in,
in)`` products per ADMM iteration, up to 300 iterations: far slower than SparseGPT's single sweep.
"""

from __future__ import annotations

import torch

from .sparsegpt import damped_hessian, refit_on_mask


def _topk_mask(x: torch.Tensor, k: int, nm: tuple[int, int] | None) -> torch.Tensor:
    if nm is not None:
        rows, cols = x.shape
        groups = x.abs().reshape(rows, cols // nm[1], nm[1])
        idx = torch.topk(groups, nm[0], dim=-1).indices
        return torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, idx, True).reshape(rows, cols)
    keep = torch.zeros(x.numel(), dtype=torch.bool, device=x.device)
    if k:
        keep[torch.topk(x.abs().reshape(-1), k).indices] = True
    return keep.reshape(x.shape)


@torch.no_grad()
def alps_prune(weight: torch.Tensor, hessian: torch.Tensor, sparsity: float, nm: tuple[int, int] | None = None,
               dampening: float = 0.01, max_iters: int = 300, cg_iters: int = 10, rho0: float = 0.1
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """ALPS pruning of one linear: ``(new_weight float32, keep mask)`` (see the module docstring)."""
    w0 = weight.detach().float()
    if nm is not None and w0.shape[1] % nm[1]:
        raise ValueError(f"N:M with M={nm[1]} needs the input size ({w0.shape[1]}) to be a multiple of {nm[1]}.")
    h, dead = damped_hessian(hessian.to(w0.device), dampening)
    w0 = torch.where(dead[None, :], torch.zeros((), device=w0.device), w0)
    scale = h.diagonal().sqrt()
    hs = h / scale[:, None] / scale[None, :]
    ws = w0 * scale[None, :]
    k = w0.numel() - int(round(sparsity * w0.numel()))
    evals, q = torch.linalg.eigh(hs)
    whq = (ws @ hs) @ q  # (W0 H) Q, fixed
    d = ws * _topk_mask(ws, k, nm)
    v = torch.zeros_like(ws)
    rho = rho0
    support = d != 0
    b = ws
    for it in range(1, max_iters + 1):
        b = ((whq - (v - rho * d) @ q) / (evals + rho)[None, :]) @ q.T
        keep = _topk_mask(b + v / rho, k, nm)
        d = torch.where(keep, b + v / rho, torch.zeros((), device=ws.device))
        v += rho * (b - d)
        if it % 3 == 0:
            changed = int((keep != support).sum())
            support = keep
            frac = changed / max(k, 1)
            if it >= 30 and frac < 3e-4:
                break
            rho = min(1e6, rho * (1.3 if frac > 0.1 else 1.2 if frac > 0.005 else 1.1 if changed else 1.0))
    keep = _topk_mask(b, k, nm)
    start = torch.where(keep, b / scale[None, :], torch.zeros((), device=ws.device))
    return refit_on_mask(w0, hessian, keep, cg_iters, dampening, start=start), keep
