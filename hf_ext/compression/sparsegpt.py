"""SparseGPT (OBS pruning with error compensation), optionally with GPTQ-style quantization, and a fixed-mask refit.

For a linear with weight ``W (out, in)`` and calibration Hessian ``H = 2/n X X^T``:

1. dampen ``H += dampening * mean(diag H) * I`` (dead inputs get ``H_ii = 1`` and zero weights);
2. ``U = upper Cholesky factor of H^-1`` (so ``U_ii^2`` is the conditional inverse Hessian of column i);
3. sweep the columns in blocks of ``blocksize`` (128): at the start of a block choose the mask from
   ``w^2 / U_ii^2`` (the fraction ``sparsity`` of lowest saliencies in the block, all rows together; N:M chooses per
   group of M columns when the sweep reaches it, from the updated weights); for each column set pruned entries to 0
   and spread the error ``(w - q) / U_ii`` over the not-yet-processed columns through row ``i`` of ``U``;
4. after each block, push its accumulated errors to the remaining columns at once (lazy batch updates).

Joint quantization (our choice, documented): the mask is chosen by the pruning sweep alone, so it is the same with
and without quantization and for every ``group_size`` (None or larger than the 128-column mask block included).
The group grids (asymmetric min-max per row and group, float16 scales, as the checkpoint stores them) are then
fitted on that sweep's *result*, the already-compensated kept weights, and a second sweep over the same mask starts
again from the dense weights and quantizes every kept weight on its group's grid while compensating the pruning and
the rounding errors together. Fitting a group's range at its first column (as before, and as GPTQ does without
``static_groups``) clips the weights that later compensation pushes outside it: at 70 % the joint error was then
higher than pruning followed by plain rounding. Fitted on the compensated weights, the grid covers where the
weights end up, so the second sweep only adds its (small) rounding corrections; it costs a second sweep.

Refit (``refit_iters > 0``, see :func:`refit_on_mask`): the kept weights are re-solved on the fixed mask by
preconditioned conjugate gradient on the damped Hessian; with quantization the grid is fitted on the refit weights
and the quantizing sweep starts from them (for weights on the support, the layer error is the refit's error plus
``tr((W - W_r) H (W - W_r)^T)``, so quantizing around ``W_r`` is the right problem).
"""

from __future__ import annotations

import torch

from ..common.quant import dequantize, quantize
from .layer import kept_grid


def damped_hessian(hessian: torch.Tensor, dampening: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Damped Hessian (dead inputs get ``H_ii = 1``) and the dead-input mask."""
    h = hessian.clone().float()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    h.diagonal().add_(dampening * torch.mean(torch.diag(h)))
    return h, dead


def _damped_cholesky(hessian: torch.Tensor, dampening: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower Cholesky factor of the damped Hessian and the dead-input mask."""
    h, dead = damped_hessian(hessian, dampening)
    damp = dampening * torch.mean(torch.diag(h))
    for attempt in range(5):
        try:
            return torch.linalg.cholesky(h), dead
        except torch.linalg.LinAlgError:
            # A rank-deficient Hessian (few calibration tokens) needs more damping; grow it rather than fail.
            h.diagonal().add_(damp * 10**attempt)
    raise ValueError("The calibration Hessian is not positive definite even after extra damping.")


def inverse_cholesky(hessian: torch.Tensor, weight: torch.Tensor, dampening: float) -> torch.Tensor:
    """Upper Cholesky factor of the damped ``H^-1``; zeroes the weights of dead inputs in place."""
    lower, dead = _damped_cholesky(hessian, dampening)
    weight[:, dead] = 0.0
    return torch.linalg.cholesky(torch.cholesky_inverse(lower), upper=True)


def obs_sweep(w: torch.Tensor, u: torch.Tensor, sparsity: float, nm: tuple[int, int] | None, blocksize: int,
           keep: torch.Tensor | None = None, grid: tuple[torch.Tensor, torch.Tensor] | None = None,
           bits: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One OBS sweep over ``w`` (modified in place). ``keep`` None: choose the mask; else use it as given.
    ``grid``: per-column ``(scale, zero)`` of shape ``(out, in)`` to quantize the kept weights on."""
    cols = w.shape[1]
    chosen = torch.ones_like(w, dtype=torch.bool) if keep is None else keep
    for b1 in range(0, cols, blocksize):
        b2 = min(b1 + blocksize, cols)
        w1 = w[:, b1:b2].clone()
        q1 = torch.zeros_like(w1)
        err1 = torch.zeros_like(w1)
        u1 = u[b1:b2, b1:b2]
        d = torch.diag(u1)
        keep1 = chosen[:, b1:b2].clone()
        if keep is None and nm is None:
            k = int(w1.numel() * sparsity)
            if k:
                idx = torch.topk((w1**2 / d[None, :] ** 2).reshape(-1), k, largest=False).indices
                keep1.view(-1)[idx] = False
        for i in range(b2 - b1):
            col = w1[:, i]
            if keep is None and nm is not None and i % nm[1] == 0:
                sal = w1[:, i : i + nm[1]] ** 2 / d[None, i : i + nm[1]] ** 2
                drop = torch.topk(sal, nm[1] - nm[0], dim=1, largest=False).indices
                keep1[:, i : i + nm[1]].scatter_(1, drop, False)
            q = torch.where(keep1[:, i], col, torch.zeros_like(col))
            if grid is not None:
                s, z = grid[0][:, b1 + i], grid[1][:, b1 + i]
                q = torch.where(keep1[:, i], dequantize(quantize(q, s, z, bits), s, z), torch.zeros_like(q))
            q1[:, i] = q
            e = (col - q) / d[i]
            w1[:, i:] -= e[:, None] * u1[i, i:][None, :]
            err1[:, i] = e
        w[:, b1:b2] = q1
        chosen[:, b1:b2] = keep1
        w[:, b2:] -= err1 @ u[b1:b2, b2:]
    return w, chosen


def _expanded(p: torch.Tensor, group_size: int | None, cols: int) -> torch.Tensor:
    return p.repeat_interleave(cols if group_size is None else group_size, dim=1)


@torch.no_grad()
def sparsegpt_prune(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    sparsity: float,
    nm: tuple[int, int] | None = None,
    bits: int | None = None,
    group_size: int | None = 128,
    blocksize: int = 128,
    dampening: float = 0.01,
    refit_iters: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Prune (and quantize) ``weight`` with OBS updates (see the module docstring).

    Returns:
        ``(new_weight float32, keep mask, scale, zero)``; ``scale``/``zero`` have shape ``(out, n_groups)`` (None
        without quantization). Pruned entries of ``new_weight`` are exactly 0; kept ones are dequantized codes.
    """
    w0 = weight.detach().clone().float()
    cols = w0.shape[1]
    if bits is not None and group_size is not None and cols % group_size:
        raise ValueError(f"group_size {group_size} does not divide the {cols} input columns.")
    if nm is not None and cols % nm[1]:
        raise ValueError(f"N:M with M={nm[1]} needs the input size ({cols}) to be a multiple of {nm[1]}.")
    hessian = hessian.to(w0.device)
    u = inverse_cholesky(hessian, w0, dampening)
    pruned, keep = obs_sweep(w0.clone(), u, sparsity, nm, blocksize)
    base = w0
    if refit_iters:
        pruned = refit_on_mask(w0, hessian, keep, refit_iters, dampening, start=pruned)
        base = pruned
    if bits is None:
        return pruned, keep, None, None
    return quantize_on_mask(base, pruned, keep, u, bits, group_size, blocksize)


@torch.no_grad()
def quantize_on_mask(base: torch.Tensor, fit_on: torch.Tensor, keep: torch.Tensor, u: torch.Tensor, bits: int,
                     group_size: int | None, blocksize: int = 128):
    """Quantizing OBS sweep over a fixed mask, starting from ``base``, on grids fitted on ``fit_on``'s kept weights.

    Returns ``(new_weight, keep, scale, zero)`` like :func:`sparsegpt_prune`.
    """
    scale, zero = kept_grid(fit_on, keep, bits, group_size)
    cols = base.shape[1]
    grid = (_expanded(scale, group_size, cols), _expanded(zero, group_size, cols))
    new, _ = obs_sweep(base.clone(), u, 0.0, None, blocksize, keep=keep.clone(), grid=grid, bits=bits)
    return new, keep, scale, zero


@torch.no_grad()
def obs_quantize(weight: torch.Tensor, hessian: torch.Tensor, keep: torch.Tensor, bits: int,
                 group_size: int | None, blocksize: int = 128, dampening: float = 0.01):
    """GPTQ-style quantization of ``weight``'s kept entries on a given mask (e.g. a refit Wanda mask)."""
    w = weight.detach().clone().float()
    u = inverse_cholesky(hessian.to(w.device), w, dampening)
    return quantize_on_mask(w, w, keep, u, bits, group_size, blocksize)


@torch.no_grad()
def refit_on_mask(weight: torch.Tensor, hessian: torch.Tensor, keep: torch.Tensor, iters: int = 10,
                  dampening: float = 0.01, start: torch.Tensor | None = None) -> torch.Tensor:
    """Kept weights re-solved on a fixed mask: ``min tr((W - W0) H (W - W0)^T)`` s.t. ``W = 0`` off ``keep``.

    Per row with kept columns S the solution is ``w_S = H_SS^-1 (H w0)_S`` (the exact refit SparseGPT's paper states
    and approximates); we solve all rows at once with ``iters`` steps of conjugate gradient on the masked operator
    ``X -> keep * (X H)`` (symmetric positive definite on the support), Jacobi-preconditioned by ``diag H``, warm
    started from ``start`` (default: the masked dense weights), on the damped Hessian (our choice: damping as
    SparseGPT's keeps rank-deficient calibration Hessians solvable). Each step costs one ``(out, in) x (in, in)``
    product, the memory is a few copies of the weight: layer by layer like SparseGPT.
    """
    w0 = weight.detach().float()
    h, dead = damped_hessian(hessian.to(w0.device), dampening)
    m = keep.to(w0.device, torch.bool) & ~dead[None, :]
    x = torch.where(m, (w0 if start is None else start.float()), torch.zeros((), device=w0.device))
    b = torch.where(m, w0 @ h, torch.zeros((), device=w0.device))
    precond = 1.0 / h.diagonal()[None, :]
    r = b - torch.where(m, x @ h, torch.zeros((), device=w0.device))
    z = r * precond
    p = z.clone()
    rz = (r * z).sum(1, keepdim=True)
    for _ in range(iters):
        ap = torch.where(m, p @ h, torch.zeros((), device=w0.device))
        denom = (p * ap).sum(1, keepdim=True)
        alpha = torch.where(denom > 0, rz / denom.clamp_min(1e-30), torch.zeros_like(denom))
        x += alpha * p
        r -= alpha * ap
        z = r * precond
        rz_new = (r * z).sum(1, keepdim=True)
        beta = torch.where(rz > 0, rz_new / rz.clamp_min(1e-30), torch.zeros_like(rz))
        p = z + beta * p
        rz = rz_new
    return torch.where(m, x, torch.zeros((), device=w0.device))


def reconstruction_error(weight: torch.Tensor, new_weight: torch.Tensor, hessian: torch.Tensor) -> float:
    """Layer output error ``tr((W - W') H (W - W')^T)``: what OBS minimizes (proportional to ||XW^T - XW'^T||^2)."""
    delta = (weight.float() - new_weight.float())
    return float(torch.einsum("ij,jk,ik->", delta, hessian.float(), delta))


def inverse_hessian_diag(hessian: torch.Tensor, dampening: float = 0.01) -> torch.Tensor:
    """``diag(H^-1)`` of the damped Hessian (dead inputs get ``H_ii = 1``): the OBS loss of removing weight j alone
    from a row is ``w_j^2 / (2 [H^-1]_jj)``."""
    lower, _ = _damped_cholesky(hessian, dampening)
    return torch.cholesky_inverse(lower).diagonal().clamp_min(1e-12)
