"""CPU loops (numba) of the codes-only compute: the blocked path's row-block dequantization, and a bitplane lookup
GEMV ``y = x @ W_k^T`` for a few tokens, straight from the codes.

Per output row (rows spread over numba's threads) and per 32-column word, the ``k``-bit code of each column is
rebuilt from the first ``k`` planes (MSB first), looked up in the row's table and accumulated against ``x``
(float32). No weight block is ever written, so decoding reads ``k / 32`` of the fp32 weight bytes plus the tables.
The summation order differs from a BLAS matmul, so results agree to float32 rounding, not bit for bit: this path is
opt-in (``AnyPrecisionConfig(cpu_kernel="gemv")``), the default blocked path matches the dense cache exactly.
"""

from __future__ import annotations

import numba
import numpy as np
import torch


@numba.njit(cache=True, parallel=True)
def _gemv(x, planes, lut, bits, n_in, out):
    m = x.shape[0]
    n_out, words = planes[0].shape
    for r in numba.prange(n_out):
        acc = np.zeros(m, dtype=np.float32)
        codes = np.empty(32, dtype=np.int32)
        lut_r = lut[r]
        for wd in range(words):
            codes[:] = 0
            for p in range(bits):  # 32 codes at once, one plane word at a time (a loop LLVM vectorizes)
                word = planes[p][r, wd]
                for b in range(32):
                    codes[b] = (codes[b] << 1) | ((word >> b) & 1)
            base = wd * 32
            for t in range(m):
                s = np.float32(0.0)
                for b in range(min(32, n_in - base)):
                    s += lut_r[codes[b]] * x[t, base + b]
                acc[t] += s
        for t in range(m):
            out[t, r] = acc[t]


def bitplane_gemv_cpu(x: torch.Tensor, planes: list[torch.Tensor], lut: torch.Tensor, bits: int) -> torch.Tensor:
    """``x @ W^T`` for ``x`` ``(..., in)`` (few rows), ``W`` given as its first ``bits`` planes and its table."""
    n_in = x.shape[-1]
    x2 = np.ascontiguousarray(x.detach().reshape(-1, n_in).float().numpy())
    ps = tuple(np.ascontiguousarray(p.numpy()) for p in planes[:bits])
    out = np.empty((x2.shape[0], lut.shape[0]), dtype=np.float32)
    _gemv(x2, ps, np.ascontiguousarray(lut.float().numpy()), bits, n_in, out)
    return torch.from_numpy(out).to(x.dtype).reshape(*x.shape[:-1], lut.shape[0])


@numba.njit(cache=True, parallel=True)
def _dequantize_rows(planes, lut, bits, start, n_in, out):
    words = planes[0].shape[1]
    for i in numba.prange(out.shape[0]):
        r = start + i
        codes = np.empty(32, dtype=np.int32)
        for wd in range(words):
            codes[:] = 0
            for p in range(bits):
                word = planes[p][r, wd]
                for b in range(32):
                    codes[b] = (codes[b] << 1) | ((word >> b) & 1)
            base = wd * 32
            for b in range(min(32, n_in - base)):
                out[i, base + b] = lut[i, codes[b]]


def dequantize_rows_cpu(planes: list[torch.Tensor], lut_rows: torch.Tensor, bits: int, start: int,
                        out: torch.Tensor) -> torch.Tensor:
    """Rows ``start : start + len(out)`` of the ``bits``-bit weight written into ``out`` (float32, contiguous):
    the same values as the table lookup in torch (``lut_rows`` holds those rows' tables), at a fraction of the
    memory traffic (the blocked path's hot loop)."""
    ps = tuple(np.ascontiguousarray(p.numpy()) for p in planes[:bits])
    _dequantize_rows(ps, np.ascontiguousarray(lut_rows.float().numpy()), bits, start, out.shape[1], out.numpy())
    return out
