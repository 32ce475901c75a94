"""SparseGPT (OBS pruning with error compensation), optionally with GPTQ-style quantization in the same sweep.

For a linear with weight ``W (out, in)`` and calibration Hessian ``H = 2/n X X^T``:

1. dampen ``H += dampening * mean(diag H) * I`` (dead inputs get ``H_ii = 1`` and zero weights);
2. ``U = upper Cholesky factor of H^-1`` (so ``U_ii^2`` is the conditional inverse Hessian of column i);
3. sweep the columns in blocks: at the start of a block choose the mask from ``w^2 / U_ii^2`` (the fraction
   ``sparsity`` of lowest saliencies in the block, all rows together; N:M chooses per group of M columns when the
   sweep reaches it, from the updated weights); for each column set pruned entries to 0, quantize kept ones, and
   spread the error ``(w - q) / U_ii`` over the not-yet-processed columns through row ``i`` of ``U``;
4. after each block, push its accumulated errors to the remaining columns at once (lazy batch updates).

With quantization, group parameters are chosen when the sweep reaches a group's first column, from the current
(error-updated) weights of the kept entries of that group (for N:M, from all entries: the later groups' masks are
not chosen yet). Scales are rounded to float16 because that is what the checkpoint stores, so the error the sweep
compensates is the error of the weights that are saved.
"""

from __future__ import annotations

import torch

from ..common.quant import dequantize, find_params, quantize


def _damped_cholesky(hessian: torch.Tensor, dampening: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower Cholesky factor of the damped Hessian (dead inputs get ``H_ii = 1``) and the dead-input mask."""
    h = hessian.clone().float()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    damp = dampening * torch.mean(torch.diag(h))
    h.diagonal().add_(damp)
    for attempt in range(5):
        try:
            return torch.linalg.cholesky(h), dead
        except torch.linalg.LinAlgError:
            # A rank-deficient Hessian (few calibration tokens) needs more damping; grow it rather than fail.
            h.diagonal().add_(damp * 10**attempt)
    raise ValueError("The calibration Hessian is not positive definite even after extra damping.")


def _inverse_cholesky(hessian: torch.Tensor, weight: torch.Tensor, dampening: float) -> torch.Tensor:
    """Upper Cholesky factor of the damped ``H^-1``; zeroes the weights of dead inputs in place."""
    lower, dead = _damped_cholesky(hessian, dampening)
    weight[:, dead] = 0.0
    return torch.linalg.cholesky(torch.cholesky_inverse(lower), upper=True)


def quant_params(w: torch.Tensor, bits: int, keep: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row ``(scale, zero)`` of shape ``(out, 1)`` for one group of columns; scale rounded to float16."""
    scale, zero = find_params(w, bits, None, keep)
    scale = scale.half().float()
    zero = torch.round(zero).clamp(0, 2**bits - 1)
    return scale, zero


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
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Prune (and quantize) ``weight`` with OBS updates.

    Returns:
        ``(new_weight float32, keep mask, scale, zero)``; ``scale``/``zero`` have shape ``(out, n_groups)`` (None
        without quantization). Pruned entries of ``new_weight`` are exactly 0; kept ones are dequantized codes.
    """
    w = weight.detach().clone().float()
    rows, cols = w.shape
    g = cols if group_size is None else group_size
    if bits is not None and cols % g:
        raise ValueError(f"group_size {g} does not divide the {cols} input columns.")
    if nm is not None and cols % nm[1]:
        raise ValueError(f"N:M with M={nm[1]} needs the input size ({cols}) to be a multiple of {nm[1]}.")
    if bits is not None and g > blocksize:
        blocksize = g  # a group's mask must be known when its parameters are chosen
    elif bits is not None:
        blocksize = max(g, blocksize // g * g)
    u = _inverse_cholesky(hessian.to(w.device), w, dampening)
    keep = torch.ones_like(w, dtype=torch.bool)
    scales, zeros = [], []
    scale = zero = None
    for b1 in range(0, cols, blocksize):
        b2 = min(b1 + blocksize, cols)
        count = b2 - b1
        w1 = w[:, b1:b2].clone()
        q1 = torch.zeros_like(w1)
        err1 = torch.zeros_like(w1)
        u1 = u[b1:b2, b1:b2]
        d = torch.diag(u1)
        if nm is None:
            keep1 = torch.ones_like(w1, dtype=torch.bool)
            saliency = w1**2 / d[None, :] ** 2
            k = int(saliency.numel() * sparsity)
            if k:
                idx = torch.topk(saliency.reshape(-1), k, largest=False).indices
                keep1.view(-1)[idx] = False
        else:
            keep1 = torch.ones_like(w1, dtype=torch.bool)
        for i in range(count):
            col = w1[:, i]
            if nm is not None and i % nm[1] == 0:
                sal = w1[:, i : i + nm[1]] ** 2 / d[None, i : i + nm[1]] ** 2
                drop = torch.topk(sal, nm[1] - nm[0], dim=1, largest=False).indices
                keep1[:, i : i + nm[1]].scatter_(1, drop, False)
            q = torch.where(keep1[:, i], col, torch.zeros_like(col))
            if bits is not None:
                if (b1 + i) % g == 0:
                    group_keep = keep1[:, i : i + g] if nm is None else None
                    scale, zero = quant_params(w1[:, i : i + g], bits, group_keep)
                    scales.append(scale)
                    zeros.append(zero)
                deq = dequantize(quantize(q[:, None], scale, zero, bits), scale, zero)[:, 0]
                q = torch.where(keep1[:, i], deq, torch.zeros_like(deq))
            q1[:, i] = q
            e = (col - q) / d[i]
            w1[:, i:] -= e[:, None] * u1[i, i:][None, :]
            err1[:, i] = e
        w[:, b1:b2] = q1
        keep[:, b1:b2] = keep1
        w[:, b2:] -= err1 @ u[b1:b2, b2:]
    if bits is None:
        return w, keep, None, None
    return w, keep, torch.cat(scales, dim=1), torch.cat(zeros, dim=1)


def reconstruction_error(weight: torch.Tensor, new_weight: torch.Tensor, hessian: torch.Tensor) -> float:
    """Layer output error ``tr((W - W') H (W - W')^T)``: what OBS minimizes (proportional to ||XW^T - XW'^T||^2)."""
    delta = (weight.float() - new_weight.float())
    return float(torch.einsum("ij,jk,ik->", delta, hessian.float(), delta))


def inverse_hessian_diag(hessian: torch.Tensor, dampening: float = 0.01) -> torch.Tensor:
    """``diag(H^-1)`` of the damped Hessian (dead inputs get ``H_ii = 1``): the OBS loss of removing weight j alone
    from a row is ``w_j^2 / (2 [H^-1]_jj)``."""
    lower, _ = _damped_cholesky(hessian, dampening)
    return torch.cholesky_inverse(lower).diagonal().clamp_min(1e-12)
