"""Model-level behaviour of an any-precision model: switching, memory accounting, measured metrics, model card."""

from __future__ import annotations

import types
from typing import Any

import torch
from huggingface_hub import ModelCardData
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..common.hub import attach_model_card, render_card
from ..common.quantizer import replaced_modules
from .config import check_bits
from .layer import AnyPrecisionLinear, PrecisionNotLoadedError

MIB = 2**20


def any_precision_layers(model: torch.nn.Module) -> dict[str, AnyPrecisionLinear]:
    return replaced_modules(model, AnyPrecisionLinear)


def _config(model: PreTrainedModel):
    cfg = getattr(model.config, "quantization_config", None)
    if cfg is None or getattr(cfg, "quant_method", None) != "hf_ext_any_precision":
        raise ValueError("This model is not an any-precision model (no hf_ext_any_precision quantization_config).")
    return cfg


def set_precision(model: PreTrainedModel, bits: int) -> PreTrainedModel:
    """Make ``bits`` the active precision of every any-precision layer (no reload; tables and planes stay)."""
    layers = any_precision_layers(model)
    if not layers:
        raise ValueError("The model has no AnyPrecisionLinear layers.")
    loaded = next(iter(layers.values())).precisions
    bits = check_bits(bits)
    if bits not in loaded:
        stored = getattr(model, "checkpoint_precisions", None) or _config(model).stored_precisions
        hint = (f" The checkpoint stores {stored}: reload with quantization_config=AnyPrecisionConfig("
                f"precisions=[..., {bits}]) to use it." if bits in stored else f" The checkpoint stores {stored}.")
        raise PrecisionNotLoadedError(f"Precision {bits} is not loaded; this model holds {loaded}.{hint}")
    for layer in layers.values():
        layer.set_precision(bits)
    model.precision = bits
    _config(model).default_precision = bits  # a save after a switch reloads at the same width
    return model


def non_quantized_nbytes(model: torch.nn.Module) -> int:
    """Bytes of parameters and buffers outside the any-precision layers (embeddings, norms, unconverted linears)."""
    seen, total = set(), 0
    inside = {id(t) for m in any_precision_layers(model).values() for t in [*m.parameters(), *m.buffers()]}
    for t in [*model.parameters(), *model.buffers()]:
        if id(t) in inside or t.data_ptr() in seen or t.device.type == "meta":
            continue
        seen.add(t.data_ptr())
        total += t.numel() * t.element_size()
    return total


def cache_nbytes(model: torch.nn.Module) -> int:
    """Bytes of the dense weights the layers cache now (zero under the default ``cache_dequantized="none"``)."""
    return sum(m.cache_nbytes() for m in any_precision_layers(model).values())


def working_buffer_nbytes(model: torch.nn.Module) -> int:
    """Bytes of the one working buffer the blocked path needs: the largest any layer asks for (shared)."""
    return max((m.workspace_nbytes() for m in any_precision_layers(model).values()), default=0)


def resident_nbytes(model: torch.nn.Module) -> int:
    """What the model keeps in memory between forwards: every parameter and buffer (each storage once), the dense
    caches of the layers and the shared dequantization buffers. Process-level overheads are not included."""
    from .layer import workspace_nbytes

    seen, total = set(), 0
    for t in [*model.parameters(), *model.buffers()]:
        if t.device.type == "meta" or t.untyped_storage().data_ptr() in seen:
            continue
        seen.add(t.untyped_storage().data_ptr())
        total += t.untyped_storage().nbytes()
    return total + cache_nbytes(model) + workspace_nbytes()


def memory_report(model: PreTrainedModel) -> dict[int, dict[str, float]]:
    """Per loaded precision: MiB of the quantized linears at that width, of the whole model, bits per weight (tables
    included), and what is resident beyond the stored bytes: the dense cache a forward at that width keeps under
    the model's ``cache_dequantized`` policy (fp32 bytes of every linear, or zero) and the shared working buffer."""
    layers = any_precision_layers(model)
    rest = non_quantized_nbytes(model)
    n_weights = sum(m.in_features * m.out_features for m in layers.values())
    policy = next(iter(layers.values())).cache
    dense = sum(m.in_features * m.out_features * torch.empty((), dtype=m.dtype).element_size()
                for m in layers.values())
    buffer = working_buffer_nbytes(model)
    out = {}
    for k in next(iter(layers.values())).precisions:
        q = sum(m.nbytes(k) for m in layers.values())
        cache = dense if policy != "none" else 0
        out[k] = {"linears_mib": q / MIB, "model_mib": (q + rest) / MIB, "bits_per_weight": 8 * q / n_weights,
                  "cache_policy": policy, "cache_mib": cache / MIB,
                  "working_buffer_mib": buffer / MIB}
    return out


def stored_mib(model: PreTrainedModel) -> float:
    """MiB of everything the model holds (every loaded plane and table plus the rest of the model)."""
    return (sum(m.stored_nbytes() for m in any_precision_layers(model).values()) + non_quantized_nbytes(model)) / MIB


def evaluate_precisions(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, data: str = "pydocs", seqlen: int = 512,
    max_tokens: int | None = 4088, precisions: list[int] | None = None, progress: bool = False,
) -> dict[int, dict[str, Any]]:
    """Measure perplexity at each precision with the project's evaluator and store it (with memory) in the
    quantization config, where the model card reads it. The active precision is restored afterwards."""
    from ..common.perplexity import perplexity

    cfg = _config(model)
    memory = memory_report(model)
    current = model.precision
    results = {}
    try:
        for k in precisions or list(memory):
            set_precision(model, k)
            res = perplexity(model, tokenizer, data, seqlen=seqlen, max_tokens=max_tokens, progress=progress)
            results[k] = {"perplexity": res.perplexity, "protocol": res.protocol, **memory[k]}
    finally:
        set_precision(model, current)
    cfg.metrics = {str(k): v for k, v in results.items()}
    return results


def make_card(model: PreTrainedModel) -> str:
    cfg = _config(model)
    memory = memory_report(model)
    metrics = cfg.metrics or {}
    rows = []
    for k, mem in memory.items():
        m = metrics.get(str(k), {})
        rows.append({"bits": k, "perplexity": f"{m['perplexity']:.3f}" if "perplexity" in m else "not measured",
                     "linears_mib": f"{mem['linears_mib']:.1f}", "model_mib": f"{mem['model_mib']:.1f}",
                     "bits_per_weight": f"{mem['bits_per_weight']:.2f}",
                     "resident_mib": f"{mem['model_mib'] + mem['cache_mib'] + mem['working_buffer_mib']:.1f}"})
    first = next(iter(memory.values()))
    protocol = next((m["protocol"] for m in metrics.values() if "protocol" in m), None)
    card_data = ModelCardData(library_name="transformers", tags=["hf-ext", "any-precision", "quantized"])
    return render_card(
        "any_precision", card_data, model_name=getattr(model.config, "_name_or_path", "") or "model",
        model_type=model.config.model_type, seed_bits=cfg.seed_bits, max_bits=cfg.max_bits, rows=rows,
        stored_mib=f"{stored_mib(model):.1f}", calibration=cfg.calibration, n_samples=cfg.n_samples,
        seqlen=cfg.seqlen, protocol=protocol, n_layers=len(any_precision_layers(model)),
        default_precision=model.precision, cache_policy=first["cache_policy"],
        cache_mib=f"{first['cache_mib']:.1f}", working_buffer_mib=f"{first['working_buffer_mib']:.1f}",
    )


def bind(model: PreTrainedModel) -> None:
    """Give ``model`` ``set_precision(k)``, ``precisions``, ``precision`` and a model card on save."""
    layers = any_precision_layers(model)
    if not layers:
        raise ValueError("No AnyPrecisionLinear layers to bind.")
    precisions = next(iter(layers.values())).precisions
    model.precisions = list(precisions)
    model.set_precision = types.MethodType(set_precision, model)
    cfg = _config(model)
    if cfg.default_precision is not None and cfg.default_precision not in cfg.stored_precisions:
        raise ValueError(f"default_precision {cfg.default_precision!r} is not stored; the checkpoint holds "
                         f"{cfg.stored_precisions}.")
    start = cfg.default_precision if cfg.default_precision in precisions else precisions[-1]
    set_precision(model, start)
    attach_model_card(model, make_card)
