"""transformers integration: ``from_pretrained(..., quantization_config=CompressionConfig(...))`` and reload.

A float load is calibrated and compressed after its weights load; a saved checkpoint (``config.json`` carries the
config with ``compressed_layers``) gets :class:`CompressedLinear` skeletons on the meta model before its packed
buffers load (a buffer absent from the safetensors files is refused then, before any weight is read), then each
layer checks its mask's popcount and every buffer's digest against the config (``checksums``) and rebuilds its
dense weight cache (none with ``resident="packed"``).
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import ModelCardData
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging

from ..common.arch import set_submodule
from ..common.hub import attach_model_card, hub_base_model, render_card
from ..common.quantizer import HfExtQuantizer, apply_to_model, register_method, replaced_modules
from .config import CompressionConfig
from .layer import DTYPES, CompressedLinear
from .pipeline import compress_model

logger = logging.get_logger(__name__)


class CompressionQuantizer(HfExtQuantizer):
    """Sparsity + low-bit compression as a transformers quantization method."""

    def quantize(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None) -> None:
        cfg: CompressionConfig = self.quantization_config
        cfg.base_model = cfg.base_model or self.checkpoint_dir
        report = compress_model(model, tokenizer, cfg)
        model.compression_report = report
        logger.info("%s", report.to_markdown().split("\n\n")[0])

    def build_skeleton(self, model: PreTrainedModel) -> None:
        cfg: CompressionConfig = self.quantization_config
        if not cfg.compressed_layers or cfg.compute_dtype not in DTYPES:
            raise ValueError("The checkpoint's hf_ext_compression config lacks compressed_layers/compute_dtype; it "
                             "was not written by hf-ext's compression.")
        stored = _stored_keys(getattr(self, "checkpoint_dir", None))
        if stored is not None and not any(f"{n}.mask" in stored for n in cfg.compressed_layers):
            stored = None  # another key naming than ours: leave it to transformers' mapping and the digests
        for name, nnz in cfg.compressed_layers.items():
            try:
                linear = model.get_submodule(name)
            except AttributeError:
                raise ValueError(f"Compressed layer {name!r} of the config does not exist in this model.") from None
            mod = CompressedLinear(linear.in_features, linear.out_features, int(nnz), cfg.bits, cfg.group_size,
                                   linear.bias is not None, DTYPES[cfg.compute_dtype], device="meta",
                                   resident=cfg.resident)
            if stored is not None:
                missing = [b for b in mod.state_dict() if f"{name}.{b}" not in stored]
                if missing:
                    raise ValueError(f"Compressed checkpoint lacks {', '.join(f'{name}.{b}' for b in missing)} "
                                     "(deleted or truncated file).")
            set_submodule(model, name, mod)

    def after_load(self, model: PreTrainedModel) -> None:
        cfg: CompressionConfig = self.quantization_config
        layers = replaced_modules(model, CompressedLinear)
        if cfg.checksums is None:
            logger.warning("This compressed checkpoint records no digests (written before they existed): only the "
                           "masks' popcounts are checked.")
        for name in cfg.compressed_layers:
            mod = layers.get(name)
            if mod is None:
                raise ValueError(f"Compressed layer {name!r} is missing after loading.")
            mod.verify(name, None if cfg.checksums is None else cfg.checksums.get(name, {}))
            mod.refresh()

    def attach(self, model: PreTrainedModel) -> None:
        attach_model_card(model, make_card)


def _stored_keys(folder: str | None) -> set[str] | None:
    """Tensor names in a local checkpoint folder's safetensors files (headers only); None when not local."""
    if not folder or not Path(folder).is_dir():
        return None
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        return None
    from safetensors import safe_open

    keys: set[str] = set()
    for f in files:
        with safe_open(str(f), "pt") as handle:
            keys.update(handle.keys())
    return keys


def make_card(model: PreTrainedModel) -> str:
    """The README.md written by ``save_pretrained``: base model, settings, calibration, recorded evaluations."""
    cfg: CompressionConfig = model.config.quantization_config
    base = cfg.base_model or "unknown"
    evals = [{"name": k, "value": v.get("value"), "protocol": v.get("protocol", "")}
             for k, v in (cfg.eval_results or {}).items()]
    data = ModelCardData(
        base_model=hub_base_model(base), library_name="transformers",
        tags=["hf-ext", "pruned", "sparse"] + (["quantized", f"{cfg.bits}-bit"] if cfg.bits else []),
    )
    return render_card(
        "compression", data, short=_short(cfg),
        base_model=base, settings=cfg.describe(), sparsity=cfg.sparsity, structure=cfg.structure,
        achieved_sparsity=cfg.achieved_sparsity, allocation=cfg.allocation, metric=cfg.metric,
        quantization=f"{cfg.bits}-bit, group {cfg.group_size}" if cfg.bits else "none", quantized=bool(cfg.bits),
        bits=cfg.bits, calibration=cfg.calibration, n_samples=cfg.n_samples, seqlen=cfg.seqlen, seed=cfg.seed,
        n_layers=len(cfg.compressed_layers or {}), not_converted=", ".join(cfg.modules_to_not_convert) or "none",
        block_sparsities=", ".join(f"{s:.3f}" for s in cfg.block_sparsities or []), eval_results=evals,
        refit=f"{cfg.refit_iters} conjugate-gradient steps" if cfg.refit_iters else "none", **_sizes(model),
    )


def _sizes(model: PreTrainedModel) -> dict[str, str]:
    """Disk bytes of the compressed linears, their resident bytes in memory now, and the dense fp16 size."""
    layers = list(replaced_modules(model, CompressedLinear).values())
    mib = lambda n: f"{n / 2**20:.2f} MiB"  # noqa: E731
    return {"disk_size": mib(sum(m.packed_bytes() for m in layers)),
            "resident_size": mib(sum(m.resident_bytes() for m in layers)),
            "dense_fp16_size": mib(sum(2 * m.in_features * m.out_features for m in layers)),
            "resident_mode": layers[0].resident if layers else "dense"}


def _short(cfg: CompressionConfig) -> str:
    return f"{cfg.allocation} {cfg.metric} {cfg.sparsity:.0%}" + (f" + {cfg.bits}-bit" if cfg.bits else "")


def compress(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, config: CompressionConfig | None = None,
             **kwargs) -> PreTrainedModel:
    """Compress a model already in memory; afterwards it saves and reloads like a ``from_pretrained`` one.

    Bad settings are rejected before any layer changes; an error in the middle of the pass (e.g. out of memory)
    leaves the blocks before it compressed, since the model is rewritten in place (keep a copy if you need one).

    Args:
        model: A float causal LM of a supported family (OPT, Llama, Gemma).
        tokenizer: Its tokenizer (for the calibration text).
        config: The settings; keyword arguments build one (``compress(model, tok, sparsity=0.5)``).
    """
    # the config is written back into: work on a copy so the caller's stays reusable
    config = config.copy(**kwargs) if config is not None else CompressionConfig(**kwargs)
    return apply_to_model(model, tokenizer, config)


def set_resident(model: PreTrainedModel, mode: str) -> None:
    """Keep a dense weight cache in every compressed linear ("dense") or only the packed buffers ("packed");
    recorded in the config so a saved copy reloads the same way."""
    for mod in replaced_modules(model, CompressedLinear).values():
        mod.set_resident(mode)
    cfg = getattr(model.config, "quantization_config", None)
    if isinstance(cfg, CompressionConfig):
        cfg.resident = mode


def record_eval(model: PreTrainedModel, name: str, value: float, protocol: str = "") -> None:
    """Store a measured number in the config so the model card (and ``config.json``) carry it."""
    cfg: CompressionConfig = model.config.quantization_config
    cfg.eval_results = {**(cfg.eval_results or {}), name: {"value": round(float(value), 4), "protocol": protocol}}


register_method(CompressionConfig, CompressionQuantizer)
