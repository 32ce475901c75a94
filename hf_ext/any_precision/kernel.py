"""Fused bitplane GEMV for CUDA (Triton): ``y = x @ W_k^T`` reading only the first ``k`` planes and ``lut_k``.

Each program computes ``BLOCK_N`` outputs of one input row. Per step it loads a ``(BLOCK_N, BLOCK_W)`` tile of
int32 words from each of the ``k`` planes (MSB plane first), rebuilds the ``k``-bit codes of ``32 * BLOCK_W``
columns in registers, gathers the weights from the row's table and accumulates in float32. No dense weight is ever
written to memory, which is what makes batch-1 decoding memory-bound on ``k / 16`` of the fp16 weight bytes.

Planes stay separate tensors (one per checkpoint key); the kernel receives up to eight plane pointers and the
unused ones are compiled out (``BITS`` is a compile-time constant).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _add_plane(code, plane_ptr, offs, mask, shifts):
    word = tl.load(plane_ptr + offs, mask=mask, other=0)
    bit = (word[:, :, None] >> shifts[None, None, :]) & 1
    return (code << 1) | bit


@triton.jit
def _bitplane_gemv_kernel(
    x_ptr, out_ptr, lut_ptr,
    p0, p1, p2, p3, p4, p5, p6, p7,
    N, K, W, stride_xm, stride_om,
    BITS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_W: tl.constexpr,
):
    pid_n = tl.program_id(0)
    m = tl.program_id(1)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_mask = rows < N
    shifts = tl.arange(0, 32)
    acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for w0 in range(0, W, BLOCK_W):
        words = w0 + tl.arange(0, BLOCK_W)
        mask = row_mask[:, None] & (words < W)[None, :]
        offs = rows[:, None] * W + words[None, :]
        code = tl.zeros((BLOCK_N, BLOCK_W, 32), dtype=tl.int32)
        code = _add_plane(code, p0, offs, mask, shifts)
        code = _add_plane(code, p1, offs, mask, shifts)
        if BITS > 2:
            code = _add_plane(code, p2, offs, mask, shifts)
        if BITS > 3:
            code = _add_plane(code, p3, offs, mask, shifts)
        if BITS > 4:
            code = _add_plane(code, p4, offs, mask, shifts)
        if BITS > 5:
            code = _add_plane(code, p5, offs, mask, shifts)
        if BITS > 6:
            code = _add_plane(code, p6, offs, mask, shifts)
        if BITS > 7:
            code = _add_plane(code, p7, offs, mask, shifts)
        cols = words[:, None] * 32 + shifts[None, :]
        xv = tl.load(x_ptr + m * stride_xm + cols, mask=cols < K, other=0.0).to(tl.float32)
        wv = tl.load(lut_ptr + rows[:, None, None] * (1 << BITS) + code, mask=row_mask[:, None, None],
                     other=0.0).to(tl.float32)
        acc += tl.sum(tl.sum(wv * xv[None, :, :], axis=2), axis=1)
    tl.store(out_ptr + m * stride_om + rows, acc.to(out_ptr.dtype.element_ty), mask=row_mask)


def default_tile(words: int) -> tuple[int, int]:
    """``(BLOCK_N, BLOCK_W)``: the best of a sweep on an H200 (benchmarks/results/any_precision.md): one row and up
    to 128 words (4096 columns) per step for wide rows, two rows of 32 words for narrow ones."""
    if words >= 64:
        return 1, min(128, triton.next_power_of_2(words))
    return 2, 32


def bitplane_gemv(x: torch.Tensor, planes: list[torch.Tensor], lut: torch.Tensor, bits: int,
                  block_n: int | None = None, block_w: int | None = None, num_warps: int = 4) -> torch.Tensor:
    """``x @ W^T`` for ``x`` of shape ``(..., in)`` with few rows, ``W`` given as ``bits`` planes and a table."""
    if len(planes) < bits or not 2 <= bits <= 8:
        raise ValueError(f"bitplane_gemv needs 2..8 bits and that many planes, got bits={bits}, {len(planes)} planes.")
    n, words = planes[0].shape
    if block_n is None or block_w is None:
        block_n, block_w = default_tile(words)
    k = x.shape[-1]
    x2 = x.reshape(-1, k).contiguous()
    out = torch.empty(x2.shape[0], n, dtype=x.dtype, device=x.device)
    ptrs = [p.contiguous() for p in planes[:bits]]
    ptrs += [ptrs[0]] * (8 - len(ptrs))
    grid = (triton.cdiv(n, block_n), x2.shape[0])
    _bitplane_gemv_kernel[grid](
        x2, out, lut.contiguous(), *ptrs, n, k, words, x2.stride(0), out.stride(0),
        BITS=bits, BLOCK_N=block_n, BLOCK_W=block_w, num_warps=num_warps,
    )
    return out.reshape(*x.shape[:-1], n)
