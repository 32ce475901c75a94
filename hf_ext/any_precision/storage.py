"""Storage dtype of the parts an any-precision model leaves unquantized (embeddings, LM head, norms, biases).

On a small model those parts dominate the file (Gemma 3 270M: a 262k x 640 embedding, 640 MiB in fp32 against
215 MiB for all widths of every decoder linear), so the checkpoint keeps them in ``non_quantized_dtype`` (float16 by
default). Quantization rounds them to that dtype in memory too (the values stay in the compute dtype), so the model
measured before saving is the model a reload gives; loading casts them back to the compute dtype (transformers casts
a checkpoint tensor to its parameter's dtype). The planes and tables of the any-precision layers are never touched:
they have their own formats (int32 planes, ``lut_dtype`` tables).
"""

from __future__ import annotations

import torch
from torch import nn

from .layer import AnyPrecisionLinear

STORAGE_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def _packed_ids(model: nn.Module) -> set[int]:
    """ids of the planes and tables of every any-precision layer (their biases are ordinary float parts)."""
    return {id(buf) for m in model.modules() if isinstance(m, AnyPrecisionLinear) for buf in m.buffers()}


def non_quantized_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The persistent floating-point tensors outside the packed planes and tables, by state-dict name."""
    packed = _packed_ids(model)
    return {n: t for n, t in model.state_dict(keep_vars=True).items()
            if id(t) not in packed and t.is_floating_point() and t.device.type != "meta"}


def _cast(name: str, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    out = t.detach().to(dtype)
    if not torch.isfinite(out).all() and torch.isfinite(t).all():
        raise ValueError(f"{name} overflows {dtype} (largest |value| {t.detach().abs().max().item():.4g}); set "
                         "non_quantized_dtype='bfloat16' or 'float32'.")
    return out


@torch.no_grad()
def round_non_quantized(model: nn.Module, dtype_name: str | None) -> None:
    """Round the non-quantized tensors to ``dtype_name`` in place, keeping their dtype (tied weights once)."""
    if dtype_name is None:
        return
    dtype, seen = STORAGE_DTYPES[dtype_name], set()
    for name, t in non_quantized_tensors(model).items():
        key = (t.data_ptr(), tuple(t.shape))
        if t.dtype == dtype or key in seen:
            continue
        seen.add(key)
        t.data.copy_(_cast(name, t, dtype))


def storage_state_dict(model: nn.Module, dtype_name: str | None) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` with the non-quantized tensors cast to ``dtype_name`` for saving. Tensors sharing a
    storage (tied embeddings / LM head) share one cast copy, so transformers still sees them as tied."""
    state = model.state_dict()
    if dtype_name is None:
        return state
    dtype, casts = STORAGE_DTYPES[dtype_name], {}
    for name in non_quantized_tensors(model):
        t = state[name]
        if t.dtype == dtype:
            continue
        key = (t.data_ptr(), tuple(t.shape))
        if key not in casts:
            casts[key] = _cast(name, t, dtype)
        state[name] = casts[key]
    return state


def stored_non_quantized_nbytes(model: nn.Module, dtype_name: str | None) -> int:
    """Bytes the non-quantized tensors take in a checkpoint saved with ``dtype_name`` (each storage once)."""
    seen, total = set(), 0
    for t in non_quantized_tensors(model).values():
        key = (t.data_ptr(), tuple(t.shape))
        if key in seen:
            continue
        seen.add(key)
        size = STORAGE_DTYPES[dtype_name].itemsize if dtype_name is not None else t.element_size()
        total += t.numel() * size
    return total
