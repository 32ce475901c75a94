"""8-bit lookup tables: each row's ``2**k`` centroids as uint8 codes on an affine grid between the row's smallest
and largest centroid, with the grid's offset and step stored as two fp16 values in the same tensor.

Why: per-row fp16 tables for every width weigh about as much as the planes on narrow rows (640 columns: the tables of
3..8 bits are 12.6 bits per weight against 8 for the planes). uint8 codes halve them. The price is a rounding of each
centroid to the row's 256-level grid, a half step at most (measured per width in ``benchmarks/any_precision.py``);
it matters most at 7-8 bits, where the centroids are as dense as the grid. Our choice, opt-in
(``lut_dtype="int8"``). One tensor per table (``(out, 2**k + 4)`` uint8: codes, then offset and step as fp16
bytes) keeps the checkpoint's one-tensor-per-width layout, digests and partial loading unchanged.
"""

from __future__ import annotations

import torch

LEVELS = 255
PARAM_BYTES = 4  # fp16 offset + fp16 step


def encode_int8_table(lut: torch.Tensor) -> torch.Tensor:
    """``(out, n)`` float table -> ``(out, n + 4)`` uint8: codes on the row's affine grid, then offset and step."""
    lut = lut.float()
    lo = lut.min(dim=1, keepdim=True).values.half()
    step = ((lut.max(dim=1, keepdim=True).values - lo.float()) / LEVELS).half()
    # rounding the codes against the fp16-rounded offset and step is what the decoder will use
    q = torch.where(step.float() > 0, (lut - lo.float()) / step.float().clamp_min(1e-30), torch.zeros_like(lut))
    codes = q.round().clamp_(0, LEVELS).to(torch.uint8)
    params = torch.cat([lo, step], dim=1).contiguous().view(torch.uint8)
    return torch.cat([codes, params], dim=1)


def decode_int8_table(buf: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
    """Rows ``start:stop`` of an encoded table as float32 ``(rows, n)``."""
    rows = buf[start:stop]
    params = rows[:, -PARAM_BYTES:].contiguous().view(torch.float16).float()
    return params[:, :1] + rows[:, :-PARAM_BYTES].float() * params[:, 1:2]


def table_entries(buf: torch.Tensor) -> int:
    """Centroids per row held by a stored table (float or encoded)."""
    return buf.shape[1] - PARAM_BYTES if buf.dtype == torch.uint8 else buf.shape[1]
