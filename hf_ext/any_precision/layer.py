"""``AnyPrecisionLinear``: a linear layer whose weight is stored once as bitplanes plus one table per precision.

State (persistent buffers, so ``save_pretrained`` / ``from_pretrained`` carry them): ``plane_0 .. plane_{L-1}``
(int32 ``(out, ceil(in / 32))``, MSB first, ``L`` the largest loaded precision) and ``lut_<k>`` (``(out, 2**k)``)
for each loaded precision ``k``; ``bias`` stays a parameter. One plane per tensor lets a checkpoint be loaded with
only the planes the requested precisions need.

Execution: on CUDA with Triton, inputs of at most ``gemv_max_tokens`` tokens use the fused bitplane GEMV kernel of
``kernel.py``. Everything else runs a blocked dequantize-and-matmul from the codes: a block of output rows is
unpacked and looked up (a numba loop on the CPU in fp32, torch ops elsewhere) into one working buffer shared by every
layer (per device and dtype, at most
:data:`DEQUANT_BLOCK_ELEMENTS` weights), multiplied, and the buffer reused for the next block. So with the default
``cache="none"`` no dense weight stays resident: the model holds its planes, tables and that one buffer. A dense
cache is opt-in (``"active"``: the active precision's weight, rebuilt on the first forward after a switch;
``"all"``: every precision used) and :meth:`cache_nbytes` reports it. The cached path multiplies the same row
blocks, so cached and uncached forwards give bit-identical outputs. The switch itself (:meth:`set_precision`) only
changes which table and how many planes the next forward reads.
"""

from __future__ import annotations

import torch
from torch import nn

from ..common.import_utils import is_triton_available
from .bitplanes import pack_bitplanes, plane_bytes, unpack_bitplanes, words_per_row
from .config import CACHE_POLICIES, CPU_KERNELS, check_bits
from .tables import PARAM_BYTES, decode_int8_table, encode_int8_table

_LUT_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32, "int8": torch.uint8}

DEQUANT_BLOCK_ELEMENTS = 1 << 20
"""Weights dequantized per block of output rows (4 MiB in fp32): our choice, large enough for BLAS to run at full
speed, small enough to stay cache-friendly and negligible next to the planes."""

_WORKSPACE: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}


def workspace(n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A flat buffer of ``n`` elements shared by every layer on ``device`` / ``dtype`` (grown, never shrunk)."""
    key = (torch.device(device), dtype)
    buf = _WORKSPACE.get(key)
    if buf is None or buf.numel() < n:
        _WORKSPACE.pop(key, None)  # free the old one first
        buf = _WORKSPACE[key] = torch.empty(n, device=device, dtype=dtype)
    return buf[:n]


def workspace_nbytes() -> int:
    """Bytes of the shared dequantization buffers (what the blocked path keeps between forwards)."""
    return sum(b.numel() * b.element_size() for b in _WORKSPACE.values())


def release_workspace() -> None:
    _WORKSPACE.clear()


class PrecisionNotLoadedError(ValueError):
    """A precision was requested that this layer (or checkpoint) does not hold."""


class AnyPrecisionLinear(nn.Module):
    """Linear layer holding nested ``seed_bits .. max_bits`` quantizations of one weight.

    Args:
        in_features: Input width.
        out_features: Output width.
        bias: Whether there is a bias.
        precisions: The precisions this layer holds tables for (sorted); planes up to the largest are kept.
        lut_dtype: Storage dtype of the tables; ``torch.uint8`` stores 8-bit tables (``tables.py``), decoded to
            float32 rows when read.
        cache: ``"none"`` (default), ``"active"`` or ``"all"``: dense dequantized weights kept between forwards.
        cpu_kernel: ``"blocked"`` (default) or ``"gemv"``: CPU inputs of at most ``gemv_max_tokens`` tokens without a
            dense cache run the numba bitplane lookup GEMV of ``cpu_kernel.py`` (float32-close, not bit-identical).
        gemv_max_tokens: Largest token count routed to the Triton kernel on CUDA.
        device: Where the (empty) buffers are created; ``"meta"`` for a loading skeleton.
        dtype: The float model's dtype (bias, ``weight``).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool, precisions: list[int],
                 lut_dtype: torch.dtype = torch.float16, cache: str = "none", gemv_max_tokens: int = 8,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32,
                 cpu_kernel: str = "blocked"):
        super().__init__()
        if not precisions:
            raise ValueError("AnyPrecisionLinear needs at least one precision.")
        if cache not in CACHE_POLICIES:
            raise ValueError(f"cache must be one of {CACHE_POLICIES}, got {cache!r}.")
        if cpu_kernel not in CPU_KERNELS:
            raise ValueError(f"cpu_kernel must be one of {CPU_KERNELS}, got {cpu_kernel!r}.")
        self.cpu_kernel = cpu_kernel
        self.in_features, self.out_features = in_features, out_features
        self.precisions = sorted(precisions)
        self.cache = cache
        self.gemv_max_tokens = gemv_max_tokens
        self.n_planes = self.precisions[-1]
        words = words_per_row(in_features)
        for p in range(self.n_planes):
            self.register_buffer(f"plane_{p}", torch.zeros(out_features, words, dtype=torch.int32, device=device))
        for k in self.precisions:
            width = 2**k + (PARAM_BYTES if lut_dtype == torch.uint8 else 0)
            self.register_buffer(f"lut_{k}", torch.zeros(out_features, width, dtype=lut_dtype, device=device))
        self.dtype = dtype  # the float model's dtype: bias, ``weight`` and the Triton path's output
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=dtype, device=device),
                                 requires_grad=False) if bias else None
        self.precision = self.precisions[-1]
        self._cache: dict[tuple, torch.Tensor] = {}

    # ----------------------------------------------------------------------------------------------- building
    @classmethod
    def from_codes(cls, codes: torch.Tensor, luts: dict[int, torch.Tensor], max_bits: int,
                   bias: torch.Tensor | None = None, lut_dtype: torch.dtype = torch.float16,
                   cache: str = "none", dtype: torch.dtype = torch.float32,
                   cpu_kernel: str = "blocked") -> AnyPrecisionLinear:
        """Build from ``max_bits`` codes ``(out, in)`` and tables ``{k: (out, 2**k)}``."""
        out, cols = codes.shape
        layer = cls(cols, out, bias is not None, sorted(luts), lut_dtype=lut_dtype, cache=cache,
                    device=codes.device, dtype=dtype, cpu_kernel=cpu_kernel)
        if layer.n_planes != max_bits:
            raise ValueError(f"tables go up to {layer.n_planes} bits but codes have {max_bits}.")
        planes = pack_bitplanes(codes, max_bits)
        for p in range(max_bits):
            getattr(layer, f"plane_{p}").copy_(planes[p])
        for k, lut in luts.items():
            getattr(layer, f"lut_{k}").copy_(encode_int8_table(lut) if lut_dtype == torch.uint8 else lut)
        if bias is not None:
            layer.bias.data.copy_(bias.detach())
        return layer

    # ------------------------------------------------------------------------------------------------- access
    def planes(self, bits: int | None = None) -> list[torch.Tensor]:
        """The first ``bits`` planes (default: the active precision)."""
        return [getattr(self, f"plane_{p}") for p in range(bits or self.precision)]

    def stored_lut(self, bits: int | None = None) -> torch.Tensor:
        """The table buffer as stored (float, or uint8 codes + grid for 8-bit tables)."""
        return getattr(self, f"lut_{self._check(bits or self.precision)}")

    def lut(self, bits: int | None = None, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Rows ``start:stop`` of the ``bits``-bit table as values (8-bit tables decoded to float32)."""
        buf = self.stored_lut(bits)
        return decode_int8_table(buf, start, stop) if buf.dtype == torch.uint8 else buf[start:stop]

    @torch.no_grad()
    def quantize_tables(self) -> None:
        """Re-store every table as an 8-bit table (``tables.py``); a no-op for tables already stored so."""
        for k in self.precisions:
            buf = self.stored_lut(k)
            if buf.dtype != torch.uint8:
                setattr(self, f"lut_{k}", encode_int8_table(buf))
        self._cache.clear()

    def codes(self, bits: int | None = None) -> torch.Tensor:
        """uint8 ``(out, in)`` codes at ``bits`` (the top ``bits`` of the stored codes)."""
        bits = self._check(bits or self.precision)
        return unpack_bitplanes(self.planes(bits), self.in_features, bits)

    def dequantize(self, bits: int | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Dense ``(out, in)`` weight at ``bits``: the ``bits``-bit table looked up with the ``bits``-bit codes."""
        bits = self._check(bits or self.precision)
        lut = self.lut(bits)
        w = lut.gather(1, self.codes(bits).long())
        return w.to(dtype or lut.dtype)

    @property
    def block_rows(self) -> int:
        """Output rows dequantized per block of the blocked path."""
        return max(1, min(self.out_features, DEQUANT_BLOCK_ELEMENTS // self.in_features))

    def dequantize_rows(self, start: int, stop: int, dtype: torch.dtype, out: torch.Tensor) -> torch.Tensor:
        """Rows ``start:stop`` of the active precision's weight, written into ``out`` (``(stop - start, in)``)."""
        bits = self.precision
        if out.device.type == "cpu" and dtype == torch.float32 and out.is_contiguous():
            from .cpu_kernel import dequantize_rows_cpu  # numba: the same values, far less memory traffic

            return dequantize_rows_cpu(self.planes(bits), self.lut(bits, start, stop), bits, start, out)
        planes = [p[start:stop] for p in self.planes(bits)]
        codes = unpack_bitplanes(planes, self.in_features, bits)
        return torch.gather(self.lut(bits, start, stop).to(dtype), 1, codes.long(), out=out)

    @property
    def weight(self) -> torch.Tensor:
        """Dequantized weight at the active precision (read-only view for code that inspects ``.weight``)."""
        return self._dense(self.dtype)

    def _check(self, bits: int) -> int:
        if bits not in self.precisions:
            raise PrecisionNotLoadedError(
                f"Precision {bits} is not loaded; this model holds {self.precisions}. Load it by reloading with "
                f"quantization_config=AnyPrecisionConfig(precisions=[..., {bits}]) if the checkpoint stores it."
            )
        return bits

    def set_precision(self, bits: int) -> None:
        """Make ``bits`` the active precision: a pointer change (cached weights of other widths are dropped
        under the ``"active"`` policy and rebuilt lazily on the next forward)."""
        self.precision = self._check(check_bits(bits))
        if self.cache == "active":
            self._cache = {key: w for key, w in self._cache.items() if key[0] == self.precision}

    def clear_cache(self) -> None:
        self._cache.clear()

    def _dense(self, dtype: torch.dtype) -> torch.Tensor:
        key = (self.precision, dtype, self.plane_0.device)
        w = self._cache.get(key)
        if w is None:
            w = self.dequantize(self.precision, dtype)
            if self.cache != "none":
                self._cache[key] = w
        return w

    def _blocked_linear(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W^T`` one block of output rows at a time, each block from the dense cache (policies "active" /
        "all") or dequantized into the shared working buffer; the same blocks either way (identical results)."""
        x2 = x.reshape(-1, self.in_features)
        dense = self._dense(x.dtype) if self.cache != "none" else None
        step = self.block_rows
        buf = None if dense is not None else workspace(step * self.in_features, x.device, x.dtype)
        y = torch.empty(x2.shape[0], self.out_features, dtype=x.dtype, device=x.device)
        for start in range(0, self.out_features, step):
            stop = min(start + step, self.out_features)
            if dense is not None:
                w = dense[start:stop]
            else:
                w = self.dequantize_rows(start, stop, x.dtype, buf[: (stop - start) * self.in_features].view(
                    stop - start, self.in_features))
            y[:, start:stop] = x2 @ w.T
        if self.bias is not None:
            y += self.bias.to(x.dtype)
        return y.reshape(*x.shape[:-1], self.out_features)

    # ------------------------------------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.numel() // self.in_features
        if x.is_cuda and tokens <= self.gemv_max_tokens and is_triton_available():
            from .kernel import bitplane_gemv

            y = bitplane_gemv(x, self.planes(), self.lut(), self.precision)
            return y + self.bias.to(y.dtype) if self.bias is not None else y
        if (self.cpu_kernel == "gemv" and x.device.type == "cpu" and tokens <= self.gemv_max_tokens
                and self.cache == "none"):
            from .cpu_kernel import bitplane_gemv_cpu

            y = bitplane_gemv_cpu(x, self.planes(), self.lut(), self.precision)
            return y + self.bias.to(y.dtype) if self.bias is not None else y
        return self._blocked_linear(x)

    def _apply(self, fn, recurse=True):
        self._cache.clear()  # cached weights live on the old device / dtype
        return super()._apply(fn, recurse)

    # --------------------------------------------------------------------------------------------- accounting
    def nbytes(self, bits: int | None = None) -> int:
        """Bytes read to run at ``bits``: its planes, its table and the bias (no cache)."""
        bits = self._check(bits or self.precision)
        lut = self.stored_lut(bits)
        bias = self.bias.numel() * self.bias.element_size() if self.bias is not None else 0
        return bits * plane_bytes(self.out_features, self.in_features) + lut.numel() * lut.element_size() + bias

    def stored_nbytes(self) -> int:
        """Bytes of everything this layer holds (all loaded planes and tables)."""
        return sum(b.numel() * b.element_size() for b in self.buffers()) + (
            self.bias.numel() * self.bias.element_size() if self.bias is not None else 0)

    def cache_nbytes(self) -> int:
        """Bytes of the dense weights this layer caches (zero under the default ``cache="none"``)."""
        return sum(w.numel() * w.element_size() for w in self._cache.values())

    def workspace_nbytes(self, dtype: torch.dtype | None = None) -> int:
        """Bytes of the working buffer this layer's blocked path needs (shared with every other layer)."""
        return self.block_rows * self.in_features * torch.empty((), dtype=dtype or self.dtype).element_size()

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"precisions={self.precisions}, precision={self.precision}, cache={self.cache!r}, "
                f"cpu_kernel={self.cpu_kernel!r}")
