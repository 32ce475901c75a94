"""``CompressedLinear``: a sparse (and optionally low-bit) linear stored as packed buffers.

Persistent buffers (what ``save_pretrained`` writes, all integer so a load in any dtype keeps them bit for bit)::

    mask     uint8  ceil(out*in / 8)        keep bitmask, row-major, 1 bit per weight (common.quant.pack_bits)
    qweight  uint8  ceil(nnz*bits / 8)      codes of the kept weights in row-major order, ``bits`` each
             or int16/int32 (nnz,)          without quantization: the kept values' raw bits (their dtype's view)
    scales   int16  (out, n_groups)         float16 scales, bit-cast (only with quantization)
    zeros    uint8  (out, n_groups)         integer zero points (only with quantization)

With ``resident="dense"`` (the default) ``weight`` is a non-persistent cache of :meth:`dequantize`, the dense weight
the forward computes with, rebuilt after loading: fastest, but then the layer takes the dense weight's memory *plus*
the packed buffers (a compressed model is smaller on disk only). With ``resident="packed"`` there is no cache: each
forward dequantizes into a temporary that is freed afterwards, so only the packed buffers stay resident (slower
forwards). :meth:`resident_bytes` counts what a layer holds. Pruned entries are exactly +0.0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..common.digests import buffer_digests, popcount
from ..common.quant import dequantize as dequantize_codes
from ..common.quant import expand, find_params, pack_bits, quantize, unpack_bits

RESIDENT = ("dense", "packed")
# bit j of byte i -> _BYTE_BITS[i, j]: unpacking a bitmask (or 1/2/4-bit codes) by table lookup, not shifts of int32s
_BYTE_BITS = torch.tensor([[(i >> j) & 1 for j in range(8)] for i in range(256)], dtype=torch.uint8)


def unpack_fast(packed: torch.Tensor, bits: int, numel: int) -> torch.Tensor:
    """:func:`~hf_ext.common.quant.unpack_bits` (same layout), with table / nibble fast paths for 1, 2, 4, 8 bits."""
    if bits == 8:
        return packed[:numel].clone()
    if bits == 4:
        return torch.stack([packed & 15, packed >> 4], dim=-1).reshape(-1)[:numel]
    if bits == 2:
        return torch.stack([(packed >> s) & 3 for s in (0, 2, 4, 6)], dim=-1).reshape(-1)[:numel]
    if bits == 1:
        return _BYTE_BITS.to(packed.device)[packed.long()].reshape(-1)[:numel]
    return unpack_bits(packed, bits, numel)
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
                 device: torch.device | str | None = None, resident: str = "dense"):
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
        if resident not in RESIDENT:
            raise ValueError(f"resident must be one of {RESIDENT}, got {resident!r}.")
        self.resident = resident
        if resident == "dense":
            self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=dtype, **kw),
                                 persistent=False)

    # ------------------------------------------------------------------------------------------- building
    @classmethod
    @torch.no_grad()
    def from_linear(cls, linear: nn.Linear, keep: torch.Tensor, new_weight: torch.Tensor | None = None,
                    bits: int | None = None, group_size: int | None = None, scale: torch.Tensor | None = None,
                    zero: torch.Tensor | None = None, resident: str = "dense") -> CompressedLinear:
        """Pack ``new_weight`` (default: the linear's weight) under ``keep``.

        With ``bits``, ``scale``/``zero`` (``(out, n_groups)``) must come with it, and ``new_weight``'s kept entries
        should already lie on that grid (as SparseGPT's joint sweep or :func:`quantize_kept` leave them).
        """
        w = (linear.weight if new_weight is None else new_weight).detach()
        out_f, in_f = w.shape
        keep = keep.to(device=w.device, dtype=torch.bool)
        nnz = int(keep.sum())
        dtype = linear.weight.dtype
        mod = cls(in_f, out_f, nnz, bits, group_size, linear.bias is not None, dtype, device=w.device,
                  resident=resident)
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
        return unpack_fast(self.mask, 1, numel).bool().reshape(self.out_features, self.in_features)

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
        codes[keep] = unpack_fast(self.qweight, self.bits, self.nnz)
        scale = expand(self.scales.view(torch.float16).float(), self.group_size, self.in_features)
        zero = expand(self.zeros.float(), self.group_size, self.in_features)
        dense = dequantize_codes(codes, scale, zero)
        return torch.where(keep, dense, torch.zeros_like(dense)).to(self.compute_dtype)

    def refresh(self) -> None:
        """Rebuild the cached dense weight (after loading or moving the packed buffers); no-op when packed only."""
        if self.resident == "dense":
            self.weight = self.dequantize().to(self.mask.device)

    def set_resident(self, mode: str) -> None:
        """Switch between keeping a dense weight cache ("dense") and the packed buffers only ("packed")."""
        if mode not in RESIDENT:
            raise ValueError(f"resident must be one of {RESIDENT}, got {mode!r}.")
        if mode == self.resident:
            return
        self.resident = mode
        if mode == "dense":
            self.register_buffer("weight", self.dequantize().to(self.mask.device), persistent=False)
        else:
            del self.weight

    def dense_weight(self) -> torch.Tensor:
        """The dense weight the forward uses (the cache, or a fresh dequantization when packed only)."""
        return self.weight if self.resident == "dense" else self.dequantize()

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nnz / (self.in_features * self.out_features)

    def packed_bytes(self) -> int:
        """Bytes of the persistent buffers (what the checkpoint stores for this layer, bias excluded)."""
        return sum(b.numel() * b.element_size() for n, b in self.named_buffers() if n != "weight")

    def resident_bytes(self) -> int:
        """Bytes this layer holds in memory: parameters, packed buffers and the dense cache if any."""
        tensors = list(self.parameters(recurse=False)) + list(self.buffers(recurse=False))
        return sum(t.numel() * t.element_size() for t in tensors)

    def digests(self) -> dict[str, str]:
        """Digest of every saved buffer (recorded in the config; checked on reload by :meth:`verify`)."""
        return buffer_digests(self)

    def verify(self, name: str, digests: dict[str, str] | None) -> None:
        """Raise ``ValueError`` naming the layer when a loaded buffer is missing, its mask's popcount disagrees with
        the kept count, or a buffer's bytes differ from its recorded digest."""
        saved = [n for n in self.state_dict() if n != "bias"]
        for buf_name in saved:
            if getattr(self, buf_name).device.type == "meta":
                raise ValueError(f"Compressed checkpoint lacks {name}.{buf_name} (missing or truncated file).")
        kept = popcount(self.mask)
        if kept != self.nnz:
            raise ValueError(f"Compressed checkpoint is corrupted: the mask of {name} keeps {kept} weights, the "
                             f"config records {self.nnz}.")
        if digests is None:
            return
        actual = self.digests()
        for buf_name in saved:
            if buf_name not in digests:
                raise ValueError(f"Compressed checkpoint has no digest for {name}.{buf_name}.")
            if actual[buf_name] != digests[buf_name]:
                raise ValueError(f"Compressed checkpoint is corrupted: {name}.{buf_name} does not match its recorded "
                                 "digest (changed bytes).")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.dense_weight()
        w = w if w.dtype == x.dtype else w.to(x.dtype)
        b = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, w, b)

    def extra_repr(self) -> str:
        quant = f", bits={self.bits}, group_size={self.group_size}" if self.bits else ""
        quant += ", resident=packed" if self.resident == "packed" else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, sparsity={self.sparsity:.3f}{quant}"


def kept_grid(weight: torch.Tensor, keep: torch.Tensor, bits: int, group_size: int | None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Min-max ``(scale, zero)`` ``(out, n_groups)`` of the kept weights of every group; scales rounded to float16
    (what the checkpoint stores), so quantizing against them reproduces the saved weights exactly."""
    w = torch.where(keep, weight.float(), torch.zeros((), dtype=torch.float32, device=weight.device))
    scale, zero = find_params(w, bits, group_size, keep)
    return scale.half().float(), zero


def quantize_kept(weight: torch.Tensor, keep: torch.Tensor, bits: int, group_size: int | None):
    """Round-to-nearest group quantization of the kept weights: ``(dequantized weight, scale, zero)``.

    The range of each group comes from its kept weights only (:func:`kept_grid`).
    """
    w = torch.where(keep, weight.float(), torch.zeros_like(weight, dtype=torch.float32))
    scale, zero = kept_grid(w, keep, bits, group_size)
    cols = w.shape[1]
    s, z = expand(scale, group_size, cols), expand(zero, group_size, cols)
    deq = dequantize_codes(quantize(w, s, z, bits), s, z)
    return torch.where(keep, deq, torch.zeros_like(deq)), scale, zero
