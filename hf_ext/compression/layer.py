"""``CompressedLinear``: a sparse (and optionally low-bit) linear stored as packed buffers.

Persistent buffers (what ``save_pretrained`` writes, all integer so a load in any dtype keeps them bit for bit)::

    mask     uint8  ceil(out*in / 8)        keep bitmask, row-major, 1 bit per weight (common.quant.pack_bits)
    qweight  uint8  ceil(nnz*bits / 8)      codes of the kept weights in row-major order, ``bits`` each
             or int16/int32 (nnz,)          without quantization: the kept values' raw bits (their dtype's view)
    scales   int16  (out, n_groups)         float16 scales, bit-cast (only with quantization)
    zeros    uint8  (out, n_groups)         integer zero points (only with quantization)

``weight`` is a non-persistent cache of :meth:`dequantize`, the dense weight the forward computes with; it is
rebuilt after loading. Pruned entries are exactly +0.0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..common.quant import dequantize as dequantize_codes
from ..common.quant import expand, find_params, pack_bits, quantize, unpack_bits

_INT_VIEW = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def dtype_name(dtype: torch.dtype) -> str:
    for name, value in DTYPES.items():
        if value == dtype:
            return name
    raise ValueError(f"Unsupported weight dtype {dtype}; use one of {list(DTYPES)}.")


class CompressedLinear(nn.Module):
    """A linear layer whose weight is a bitmask plus packed kept values (see the module docstring)."""

    def __init__(self, in_features: int, out_features: int, nnz: int, bits: int | None = None,
                 group_size: int | None = None, bias: bool = False, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None):
        super().__init__()
        self.in_features, self.out_features, self.nnz = in_features, out_features, nnz
        self.bits, self.group_size, self.compute_dtype = bits, group_size, dtype
        numel = in_features * out_features
        kw = dict(device=device)
        self.register_buffer("mask", torch.zeros((numel + 7) // 8, dtype=torch.uint8, **kw))
        if bits is None:
            self.register_buffer("qweight", torch.zeros(nnz, dtype=_INT_VIEW[dtype], **kw))
        else:
            g = in_features if group_size is None else group_size
            n_groups = in_features // g
            self.register_buffer("qweight", torch.zeros((nnz * bits + 7) // 8, dtype=torch.uint8, **kw))
            self.register_buffer("scales", torch.zeros(out_features, n_groups, dtype=torch.int16, **kw))
            self.register_buffer("zeros", torch.zeros(out_features, n_groups, dtype=torch.uint8, **kw))
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=dtype, **kw)) if bias else None
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=dtype, **kw), persistent=False)

    # ------------------------------------------------------------------------------------------- building
    @classmethod
    @torch.no_grad()
    def from_linear(cls, linear: nn.Linear, keep: torch.Tensor, new_weight: torch.Tensor | None = None,
                    bits: int | None = None, group_size: int | None = None, scale: torch.Tensor | None = None,
                    zero: torch.Tensor | None = None) -> CompressedLinear:
        """Pack ``new_weight`` (default: the linear's weight) under ``keep``.

        With ``bits``, ``scale``/``zero`` (``(out, n_groups)``) must come with it, and ``new_weight``'s kept entries
        should already lie on that grid (as SparseGPT's joint sweep or :func:`quantize_kept` leave them).
        """
        w = (linear.weight if new_weight is None else new_weight).detach()
        out_f, in_f = w.shape
        keep = keep.to(device=w.device, dtype=torch.bool)
        nnz = int(keep.sum())
        dtype = linear.weight.dtype
        mod = cls(in_f, out_f, nnz, bits, group_size, linear.bias is not None, dtype, device=w.device)
        mod.mask.copy_(pack_bits(keep, 1))
        if bits is None:
            mod.qweight.copy_(w.to(dtype)[keep].view(_INT_VIEW[dtype]))
        else:
            if scale is None or zero is None:
                raise ValueError("from_linear with bits needs the quantization scale and zero.")
            scale16 = scale.to(w.device).half()
            s, z = expand(scale16.float(), group_size, in_f), expand(zero.to(w.device).float(), group_size, in_f)
            codes = quantize(w.float(), s, z, bits)
            mod.qweight.copy_(pack_bits(codes[keep], bits))
            mod.scales.copy_(scale16.view(torch.int16))
            mod.zeros.copy_(zero.to(torch.uint8))
        if linear.bias is not None:
            mod.bias.copy_(linear.bias.detach())
        mod.refresh()
        return mod

    # ------------------------------------------------------------------------------------------- reading
    def keep_mask(self) -> torch.Tensor:
        numel = self.in_features * self.out_features
        return unpack_bits(self.mask, 1, numel).bool().reshape(self.out_features, self.in_features)

    @torch.no_grad()
    def dequantize(self) -> torch.Tensor:
        """The dense weight this layer computes with, rebuilt from the packed buffers."""
        keep = self.keep_mask()
        if self.bits is None:
            values = self.qweight.view(self.compute_dtype)
            dense = torch.zeros(keep.shape, dtype=self.compute_dtype, device=keep.device)
            dense[keep] = values
            return dense
        codes = torch.zeros(keep.shape, dtype=torch.uint8, device=keep.device)
        codes[keep] = unpack_bits(self.qweight, self.bits, self.nnz)
        scale = expand(self.scales.view(torch.float16).float(), self.group_size, self.in_features)
        zero = expand(self.zeros.float(), self.group_size, self.in_features)
        dense = dequantize_codes(codes, scale, zero)
        return torch.where(keep, dense, torch.zeros_like(dense)).to(self.compute_dtype)

    def refresh(self) -> None:
        """Rebuild the cached dense weight (after loading or moving the packed buffers)."""
        self.weight = self.dequantize().to(self.mask.device)

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nnz / (self.in_features * self.out_features)

    def packed_bytes(self) -> int:
        """Bytes of the persistent buffers (what the checkpoint stores for this layer, bias excluded)."""
        return sum(b.numel() * b.element_size() for n, b in self.named_buffers() if n != "weight")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight if self.weight.dtype == x.dtype else self.weight.to(x.dtype)
        b = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, w, b)

    def extra_repr(self) -> str:
        quant = f", bits={self.bits}, group_size={self.group_size}" if self.bits else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, sparsity={self.sparsity:.3f}{quant}"


def quantize_kept(weight: torch.Tensor, keep: torch.Tensor, bits: int, group_size: int | None):
    """Round-to-nearest group quantization of the kept weights: ``(dequantized weight, scale, zero)``.

    The range of each group comes from its kept weights only; scales are rounded to float16 as stored.
    """
    w = torch.where(keep, weight.float(), torch.zeros_like(weight, dtype=torch.float32))
    scale, zero = find_params(w, bits, group_size, keep)
    scale = scale.half().float()
    cols = w.shape[1]
    s, z = expand(scale, group_size, cols), expand(zero, group_size, cols)
    deq = dequantize_codes(quantize(w, s, z, bits), s, z)
    return torch.where(keep, deq, torch.zeros_like(deq)), scale, zero
