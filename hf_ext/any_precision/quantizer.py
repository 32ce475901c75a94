"""Any-Precision LLM as a transformers quantization method (``quant_method = "hf_ext_any_precision"``).

``from_pretrained(path, quantization_config=AnyPrecisionConfig(...))`` on a float checkpoint calibrates (Fisher
weights from one backward per calibration window), builds the seed model and upscales it layer by layer, and swaps
every decoder linear for an :class:`AnyPrecisionLinear`. ``save_pretrained`` writes one plane per tensor and one
table per precision; a later ``from_pretrained(out)`` rebuilds the layers on the meta model and loads them.

Loading only some precisions: transformers 5.24 hands unknown ``from_pretrained`` keywords to the model
constructor, so a bare ``precisions=[3, 4]`` raises ``TypeError`` there. The supported form is
``from_pretrained(out, quantization_config=AnyPrecisionConfig(precisions=[3, 4]))``: this module adds the config to
transformers' loading-attribute configs, so those fields override the checkpoint's (transformers warns that the
rest of the passed config is ignored). :func:`hf_ext.any_precision.from_pretrained` wraps that call. Planes above
the largest requested precision and unrequested tables are skipped (never read into memory).

Integrity: quantization records a digest of every plane and table in the config; loading checks the safetensors
files are complete before anything loads and verifies the digests after, raising ``ValueError`` otherwise (the
model is never returned half-loaded).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.quantizers import auto as _auto
from transformers.utils import logging

from ..common.arch import is_skipped, named_block_linears, set_submodule
from ..common.data import calibration_batches
from ..common.offload import read_safetensors_header
from ..common.quantizer import HfExtQuantizer, register_method
from .config import AnyPrecisionConfig
from .fisher import fisher_diagonal
from .layer import _LUT_DTYPES, AnyPrecisionLinear
from .model import any_precision_layers, bind
from .seed import SortedRows, kmeans_bounds, row_chunks
from .storage import round_non_quantized, storage_state_dict
from .upscale import upscale_bounds

logger = logging.get_logger(__name__)


def target_linears(model: nn.Module, modules_to_not_convert: list[str] | None) -> dict[str, nn.Linear]:
    """The decoder linears to convert (every block projection except names containing a skipped substring)."""
    out = {n: m for n, m in named_block_linears(model).items()
           if isinstance(m, nn.Linear) and not is_skipped(n, modules_to_not_convert)}
    if not out:
        raise ValueError(f"No decoder linears left to quantize (modules_to_not_convert={modules_to_not_convert!r}).")
    return out


def quantize_weight(
    w: torch.Tensor, fisher: torch.Tensor, config: AnyPrecisionConfig
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Seed k-means at ``seed_bits`` then upscaling to ``max_bits``: ``(codes uint8, {bits: table})``.

    Rows are independent, so they are processed in chunks (bounded float64 temporaries on wide layers)."""
    codes, luts = [], []
    for rs in row_chunks(*w.shape):
        rows = SortedRows.build(w[rs], fisher[rs])
        bounds, lut = kmeans_bounds(rows, config.seed_bits, config.kmeans_iterations, config.seed, rs.start)
        bounds, chunk = upscale_bounds(rows, bounds, lut, config.max_bits, config.split_iterations,
                                       config.split_method)
        codes.append(rows.codes(bounds).to(torch.uint8))
        luts.append(chunk)
    return torch.cat(codes), {b: torch.cat([c[b] for c in luts]) for b in luts[0]}


def tensor_digest(t: torch.Tensor) -> str:
    data = t.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy()
    return hashlib.blake2b(data.data, digest_size=8).hexdigest()


def layer_digests(layer: AnyPrecisionLinear) -> dict[str, str]:
    return {name: tensor_digest(buf) for name, buf in layer.named_buffers()}


def check_safetensors_complete(files: list[str]) -> None:
    """Raise ``ValueError`` naming the file if a safetensors file is shorter than its header says (truncated)."""
    for f in files:
        if not str(f).endswith(".safetensors"):
            continue
        size = os.path.getsize(f)
        try:
            header, start = read_safetensors_header(f)
        except ValueError as e:
            raise ValueError(f"Any-precision checkpoint file {f} is corrupted or truncated ({e}).") from None
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        if start + end > size:
            raise ValueError(f"Any-precision checkpoint file {f} is truncated: {size} bytes, {start + end} expected.")


def compute_fisher(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, config: AnyPrecisionConfig,
                   progress: bool = True) -> dict[str, torch.Tensor]:
    """Squared-gradient sensitivities of the linears ``config`` converts, on its calibration data."""
    targets = target_linears(model, config.modules_to_not_convert)
    ids = calibration_batches(tokenizer, config.calibration, config.n_samples, config.seqlen, config.seed)
    logger.info("Any-precision: Fisher weights from %d x %d tokens for %d linears", *ids.shape, len(targets))
    return fisher_diagonal(model, ids, targets, progress=progress)


def check_checkpoint_keys(files: list[str], config: AnyPrecisionConfig) -> None:
    """Raise ``ValueError`` naming the tensors the config lists (for the precisions to load) that no safetensors
    file holds: a missing tensor is reported as missing, before anything loads, not later as a digest mismatch."""
    files = [str(f) for f in files if str(f).endswith(".safetensors")]
    if not files or not config.checksums:
        return
    present = set()
    for f in files:
        present |= set(read_safetensors_header(f)[0]) - {"__metadata__"}
    loaded = config.loaded_precisions
    keep = {f"plane_{p}" for p in range(loaded[-1])} | {f"lut_{k}" for k in loaded}
    missing = [f"{layer}.{buf}" for layer, digests in config.checksums.items() for buf in digests
               if buf in keep and f"{layer}.{buf}" not in present]
    if missing:
        raise ValueError(f"Any-precision checkpoint is missing {len(missing)} tensor(s), e.g. {missing[0]!r} "
                         f"(listed in its config, absent from {', '.join(Path(f).name for f in files)}).")


class AnyPrecisionQuantizer(HfExtQuantizer):
    """Calibrate + seed + upscale on a float model; rebuild packed layers before a saved checkpoint loads."""

    quantization_config: AnyPrecisionConfig

    def quantize(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None,
                 fisher: dict[str, torch.Tensor] | None = None) -> None:
        """``fisher``: sensitivities from :func:`compute_fisher` (``api.quantize(..., fisher=...)``), so benchmarks
        reuse one calibration pass for several quantizations of the same model."""
        cfg = self.quantization_config
        if tokenizer is None:
            raise ValueError("AnyPrecisionConfig calibrates on text and needs a tokenizer.")
        targets = target_linears(model, cfg.modules_to_not_convert)
        fisher = dict(fisher) if fisher is not None else compute_fisher(model, tokenizer, cfg)
        missing = sorted(set(targets) - set(fisher))
        if missing:
            raise ValueError(f"Precomputed sensitivities lack {len(missing)} layers, e.g. {missing[0]!r}.")
        lut_dtype = _LUT_DTYPES[cfg.lut_dtype]
        digests = {}
        with torch.no_grad():
            for name, lin in tqdm(targets.items(), desc="any-precision layers"):
                codes, luts = quantize_weight(lin.weight.detach(), fisher.pop(name), cfg)
                layer = AnyPrecisionLinear.from_codes(codes, luts, cfg.max_bits, bias=lin.bias, lut_dtype=lut_dtype,
                                                      cache=cfg.cache_dequantized, dtype=lin.weight.dtype,
                                                      cpu_kernel=cfg.cpu_kernel)
                set_submodule(model, name, layer)
                digests[name] = layer_digests(layer)
        round_non_quantized(model, cfg.non_quantized_dtype)
        cfg.checksums = digests
        cfg.available_precisions = None
        cfg.precisions = None

    def _process_model_before_weight_loading(self, model, checkpoint_files=None, **kwargs):
        if self.pre_quantized and checkpoint_files:
            check_safetensors_complete([str(f) for f in checkpoint_files])
            check_checkpoint_keys([str(f) for f in checkpoint_files], self.quantization_config)
        return super()._process_model_before_weight_loading(model, checkpoint_files=checkpoint_files, **kwargs)

    def build_skeleton(self, model: PreTrainedModel) -> None:
        cfg = self.quantization_config
        cfg.validate()  # loading attributes passed to from_pretrained were set on the saved config unchecked
        if not cfg.checksums:
            raise ValueError("This any-precision checkpoint's config lists no layers (checksums missing); it is "
                             "corrupted or was not written by hf-ext.")
        loaded = cfg.loaded_precisions
        lut_dtype = _LUT_DTYPES[cfg.lut_dtype]
        for name in cfg.checksums:
            try:
                lin = model.get_submodule(name)
            except AttributeError:
                raise ValueError(f"Layer {name!r} of the any-precision config does not exist in this model.") from None
            layer = AnyPrecisionLinear(lin.in_features, lin.out_features, lin.bias is not None, loaded,
                                       lut_dtype=lut_dtype, cache=cfg.cache_dequantized, device="meta",
                                       dtype=lin.weight.dtype, cpu_kernel=cfg.cpu_kernel)
            set_submodule(model, name, layer)
        stored = cfg.stored_precisions
        skip_planes = [str(p) for p in range(loaded[-1], stored[-1])]
        skip_luts = [str(k) for k in stored if k not in loaded]
        patterns = [rf"\.plane_(?:{'|'.join(skip_planes)})$"] if skip_planes else []
        patterns += [rf"\.lut_(?:{'|'.join(skip_luts)})$"] if skip_luts else []
        if patterns:
            model._keys_to_ignore_on_load_unexpected = set(model._keys_to_ignore_on_load_unexpected or ()) | set(
                patterns)

    def after_load(self, model: PreTrainedModel) -> None:
        cfg = self.quantization_config
        layers = any_precision_layers(model)
        for name, expected in cfg.checksums.items():
            layer = layers.get(name)
            if layer is None:
                raise ValueError(f"Any-precision layer {name!r} is missing after loading.")
            for buf_name, buf in layer.named_buffers():
                if buf.device.type == "meta":
                    raise ValueError(f"Any-precision checkpoint lacks {name}.{buf_name} (corrupted or truncated).")
                if buf_name not in expected:
                    raise ValueError(f"Any-precision checkpoint has no digest for {name}.{buf_name}.")
                if tensor_digest(buf) != expected[buf_name]:
                    raise ValueError(f"Any-precision checkpoint is corrupted: {name}.{buf_name} does not match its "
                                     "recorded digest.")
        loaded = cfg.loaded_precisions
        model.checkpoint_precisions = cfg.stored_precisions
        # The model now holds only the loaded precisions: a save must describe exactly that.
        keep = {f"plane_{p}" for p in range(loaded[-1])} | {f"lut_{k}" for k in loaded}
        cfg.checksums = {n: {b: d for b, d in e.items() if b in keep} for n, e in cfg.checksums.items()}
        cfg.available_precisions = loaded if loaded != list(range(cfg.seed_bits, cfg.max_bits + 1)) else None
        cfg.precisions = None
        if cfg.default_precision not in loaded:
            cfg.default_precision = None  # a stored default that was not loaded: the largest loaded width

    def attach(self, model: PreTrainedModel) -> None:
        bind(model)

    def get_state_dict_and_metadata(self, model):
        """What ``save_pretrained`` writes: the unquantized parts in ``non_quantized_dtype`` (see ``storage.py``)."""
        return storage_state_dict(model, self.quantization_config.non_quantized_dtype), {}


def checkpoint_file_size(path: str | os.PathLike) -> int:
    """Bytes of the weight files in a saved checkpoint folder."""
    return sum(f.stat().st_size for f in Path(path).glob("*.safetensors"))


# transformers merges "loading attributes" of a config passed to from_pretrained into a saved checkpoint's config
# only for the classes in this tuple; adding ours is what makes precisions=[...] selectable at load time.
if AnyPrecisionConfig not in _auto.LOADING_ATTRIBUTES_CONFIG_TYPES:
    _auto.LOADING_ATTRIBUTES_CONFIG_TYPES = (*_auto.LOADING_ATTRIBUTES_CONFIG_TYPES, AnyPrecisionConfig)

register_method(AnyPrecisionConfig, AnyPrecisionQuantizer)
