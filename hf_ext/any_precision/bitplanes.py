"""Bitplane storage: ``n``-bit codes as ``n`` planes of bits, most significant plane first.

Plane ``p`` holds bit ``n - 1 - p`` of every code, packed 32 columns to an int32 word per row::

    codes (n=3, one row):  c0=101  c1=011  c2=110 ...
    plane 0 (MSB):         1 0 1 ...   -> word bit j = plane bit of column 32 * w + j
    plane 1:               0 1 1 ...
    plane 2 (LSB):         1 1 0 ...
    planes: int32 (n, out, ceil(in / 32)); padding columns are zero

Reading precision ``k`` touches only planes ``0..k-1`` and gives the top ``k`` bits of every code. Rows stay word
aligned (unlike the flat stream of ``common.quant.pack_bits``) so a GEMV kernel reads one word per 32 columns.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

WORD = 32


def words_per_row(in_features: int) -> int:
    return (in_features + WORD - 1) // WORD


def pack_bitplanes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack ``(out, in)`` codes in ``[0, 2**bits)`` into int32 planes ``(bits, out, ceil(in / 32))``, MSB first."""
    if codes.dim() != 2:
        raise ValueError(f"codes must be 2-D (out, in), got shape {tuple(codes.shape)}.")
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8, got {bits}.")
    c = codes.to(torch.int64)
    if c.numel() and (int(c.min()) < 0 or int(c.max()) >= 2**bits):
        raise ValueError(f"codes out of range for {bits} bits.")
    out, cols = c.shape
    n_words = words_per_row(cols)
    c = torch.nn.functional.pad(c, (0, n_words * WORD - cols)).reshape(out, n_words, WORD)
    weights = torch.ones(WORD, dtype=torch.int64, device=c.device) << torch.arange(WORD, device=c.device)
    planes = []
    for p in range(bits):
        bit = (c >> (bits - 1 - p)) & 1
        word = (bit * weights).sum(-1)
        # Reinterpret the unsigned 32-bit value as int32 (two's complement wrap-around).
        planes.append(torch.where(word >= 2**31, word - 2**32, word).to(torch.int32))
    return torch.stack(planes)


def unpack_bitplanes(planes: Sequence[torch.Tensor] | torch.Tensor, in_features: int, bits: int) -> torch.Tensor:
    """Top ``bits`` bits of every code from the first ``bits`` planes: uint8 ``(out, in_features)``.

    ``planes`` is a stacked ``(>= bits, out, words)`` tensor or a sequence of ``(out, words)`` planes; planes past
    ``bits`` are never read.
    """
    if len(planes) < bits:
        raise ValueError(f"{bits}-bit codes need {bits} planes, only {len(planes)} given.")
    shifts = torch.arange(WORD, dtype=torch.int32, device=planes[0].device)
    code = None
    for p in range(bits):
        plane = planes[p]
        bit = ((plane.unsqueeze(-1) >> shifts) & 1).to(torch.uint8).reshape(plane.shape[0], -1)[:, :in_features]
        code = bit if code is None else (code << 1) | bit
    return code


def plane_bytes(out_features: int, in_features: int) -> int:
    """Bytes of one stored plane."""
    return out_features * words_per_row(in_features) * 4
