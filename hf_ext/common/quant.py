"""Group-wise uniform quantization and bit packing: the math every low-bit method in hf-ext shares.

Layout (a choice, stated once): asymmetric min-max quantization per output row and per group of ``group_size``
consecutive input columns; ``scale`` and ``zero`` have shape ``(out, n_groups)``; codes are integers in
``[0, 2**bits - 1]`` and ``w ~= (q - zero) * scale``. ``group_size=None`` means one group per row.

Bit packing writes codes as a little-endian bit stream into ``uint8``::

    codes (bits=3):  c0=101  c1=011  c2=110 ...
    stream bits:     1 0 1 | 1 1 0 | 0 1 1 ...   (LSB of each code first)
    bytes:           stream bits 0..7 -> byte 0 (bit i of the stream is bit i % 8 of byte i // 8)

so ``n`` codes of ``b`` bits take exactly ``ceil(n * b / 8)`` bytes (a bool mask is ``bits=1``).
"""

from __future__ import annotations

import torch


def _groups(w: torch.Tensor, group_size: int | None) -> tuple[torch.Tensor, int]:
    out, cols = w.shape
    g = cols if group_size is None or group_size <= 0 else group_size
    if cols % g:
        raise ValueError(f"group_size {g} does not divide the {cols} input columns.")
    return w.reshape(out, cols // g, g), g


def find_params(
    w: torch.Tensor, bits: int, group_size: int | None = 128, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Min-max ``(scale, zero)`` of shape ``(out, n_groups)``; with ``mask`` only kept weights set the range."""
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8, got {bits}.")
    wg, _ = _groups(w.float(), group_size)
    if mask is not None:
        mg, _ = _groups(mask, group_size)
        big = torch.finfo(torch.float32).max
        lo = torch.where(mg, wg, torch.full_like(wg, big)).amin(-1)
        hi = torch.where(mg, wg, torch.full_like(wg, -big)).amax(-1)
        empty = ~mg.any(-1)
        lo, hi = torch.where(empty, 0.0, lo), torch.where(empty, 0.0, hi)
    else:
        lo, hi = wg.amin(-1), wg.amax(-1)
    # The range must contain 0 so that pruned (zero) weights stay exactly representable.
    lo, hi = lo.clamp(max=0), hi.clamp(min=0)
    maxq = 2**bits - 1
    scale = (hi - lo) / maxq
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    zero = torch.round(-lo / scale)
    return scale, zero


def expand(p: torch.Tensor, group_size: int | None, cols: int) -> torch.Tensor:
    """Repeat per-group parameters ``(out, n_groups)`` to per-column ``(out, cols)``."""
    g = cols if group_size is None or group_size <= 0 else group_size
    return p.repeat_interleave(g, dim=1)


def quantize(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    """Codes of ``w`` given broadcastable ``scale``/``zero`` (per-column, or per-group expanded)."""
    return torch.clamp(torch.round(w / scale) + zero, 0, 2**bits - 1)


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    return (q.float() - zero) * scale


def quantize_rtn(
    w: torch.Tensor, bits: int, group_size: int | None = 128, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Round-to-nearest group-wise quantization: ``(codes uint8 (out, in), scale, zero)``."""
    scale, zero = find_params(w, bits, group_size, mask)
    cols = w.shape[1]
    q = quantize(w.float(), expand(scale, group_size, cols), expand(zero, group_size, cols), bits)
    return q.to(torch.uint8), scale, zero


def fake_quantize(w: torch.Tensor, bits: int, group_size: int | None = 128, mask: torch.Tensor | None = None):
    """``dequantize(quantize(w))`` in ``w``'s dtype; pruned entries (``mask`` False) stay exactly zero."""
    q, scale, zero = quantize_rtn(w, bits, group_size, mask)
    cols = w.shape[1]
    out = dequantize(q, expand(scale, group_size, cols), expand(zero, group_size, cols))
    if mask is not None:
        out = out * mask
    return out.to(w.dtype)


def pack_bits(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack integer codes in ``[0, 2**bits)`` into a flat ``uint8`` bit stream (see the module docstring)."""
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8, got {bits}.")
    flat = codes.reshape(-1).to(torch.int32)
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= 2**bits):
        raise ValueError(f"codes out of range for {bits} bits.")
    shifts = torch.arange(bits, dtype=torch.int32, device=flat.device)
    stream = ((flat[:, None] >> shifts) & 1).reshape(-1).to(torch.uint8)
    pad = (-stream.numel()) % 8
    if pad:
        stream = torch.cat([stream, stream.new_zeros(pad)])
    weights = (1 << torch.arange(8, dtype=torch.int32, device=flat.device)).to(torch.uint8)
    return (stream.reshape(-1, 8) * weights).sum(-1, dtype=torch.int32).to(torch.uint8)


def unpack_bits(packed: torch.Tensor, bits: int, numel: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: the first ``numel`` codes as ``uint8``."""
    need = (numel * bits + 7) // 8
    if packed.numel() < need:
        raise ValueError(f"packed stream holds {packed.numel()} bytes, {need} needed for {numel} codes of {bits} bits.")
    shifts = torch.arange(8, dtype=torch.int32, device=packed.device)
    stream = ((packed[:need].to(torch.int32)[:, None] >> shifts) & 1).reshape(-1)[: numel * bits]
    weights = 1 << torch.arange(bits, dtype=torch.int32, device=packed.device)
    return (stream.reshape(numel, bits) * weights).sum(-1).to(torch.uint8)
