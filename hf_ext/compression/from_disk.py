"""Compress a checkpoint on disk without loading it: for models larger than memory.

``from_pretrained(..., quantization_config=cfg)`` and :func:`~hf_ext.compression.compress` need the whole float
model in memory. :func:`compress_checkpoint` streams it instead: the model is built on the meta device, the
embeddings are read from the checkpoint, and each decoder block is read, calibrated, pruned (and quantized), written
to its own output shard and dropped before the next one is read. Peak memory is the embeddings plus one block plus
the calibration activations; the dense weights outside the blocks are copied to the output file by file without
being loaded. The output folder is what ``compress(...).save_pretrained(out)`` would write, bit for bit in every
compressed tensor, and reloads with plain ``from_pretrained(out)`` after ``import hf_ext``.

    hf_ext.compress_checkpoint("facebook/opt-6.7b", "opt-6.7b-70", hf_ext.CompressionConfig(sparsity=0.7))

The checkpoint must be safetensors (a folder or a Hub id); the whole output is written atomically. On glibc this
sets a fixed mmap threshold for the process (``common.utils.fixed_mmap_threshold``): without it, freed blocks stay
in a fragmented heap and the process grows by about a block per block.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import AutoConfig, AutoTokenizer, GenerationConfig, PreTrainedTokenizerBase
from transformers.utils import logging

from ..common.arch import get_blocks
from ..common.capture import BlockStep
from ..common.models import resolve_model_path
from ..common.offload import DiskOffload, SafetensorsCheckpoint, ShardWriter, empty_model
from ..common.utils import atomic_dir, atomic_write_text, check_output_dir, fixed_mmap_threshold
from .config import CompressionConfig
from .layer import DTYPES
from .pipeline import compress_model
from .quantizer import make_card
from .report import CompressionReport

logger = logging.get_logger(__name__)

_HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "tokenizer*"]


def _local_folder(name_or_path: str) -> str:
    path = resolve_model_path(name_or_path)
    if Path(path).is_dir():
        return path
    if os.path.exists(path):
        raise ValueError(f"{path} is a file; compress_checkpoint needs a model folder or a Hub id.")
    from huggingface_hub import snapshot_download

    return snapshot_download(path, allow_patterns=_HUB_PATTERNS)


def _checkpoint_dtype(path: str) -> torch.dtype:
    dtype = getattr(AutoConfig.from_pretrained(path), "dtype", None)
    if isinstance(dtype, str):
        dtype = DTYPES.get(dtype)
    return dtype if dtype in DTYPES.values() else torch.float32


def compress_checkpoint(
    model_name_or_path: str | os.PathLike,
    save_directory: str | os.PathLike,
    config: CompressionConfig | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    dtype: torch.dtype | None = None,
    overwrite: bool = False,
    **kwargs,
) -> CompressionReport:
    """Compress a safetensors checkpoint block by block from disk and save the result.

    Args:
        model_name_or_path: A model folder, a Hub id, or ``"default"`` (the embedded Gemma 3 270M).
        save_directory: Output folder (replaced atomically: a failure leaves no partial folder).
        config: The settings; keyword arguments build one or override fields of a copy.
        tokenizer: Calibration tokenizer (default: the checkpoint's).
        dtype: Dtype the blocks are computed and stored in (default: the checkpoint's ``dtype``, else float32).
        overwrite: Allow a non-empty ``save_directory``: replace what hf-ext wrote there, keep every other file.

    Returns:
        The compression report (also saved as ``compression_report.md`` / ``.png`` in ``save_directory``).
    """
    cfg = config.copy(**kwargs) if config is not None else CompressionConfig(**kwargs)
    check_output_dir(save_directory, overwrite)  # before any read
    if cfg.allocation == "mrp" and cfg.mrp_mode == "measured" and cfg.block_sparsities is None:
        logger.warning("mrp_mode='measured' keeps every block's weights (and Hessians for sparsegpt / alps) in memory "
                       "until the allocation is done; for a model larger than memory use mrp_mode='simulated'.")
    path = _local_folder(str(model_name_or_path))
    fixed_mmap_threshold()
    checkpoint = SafetensorsCheckpoint(path)
    dtype = dtype or _checkpoint_dtype(path)
    model = empty_model(path, dtype)  # unsupported families fail in compress_model's get_arch, before any read
    tokenizer = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(path)
    offload = DiskOffload(model, checkpoint, dtype)
    offload.load_outside_blocks()
    n_blocks = len(get_blocks(model))
    with atomic_dir(save_directory, overwrite=overwrite) as tmp:
        writer = ShardWriter(tmp, n_blocks + 1)

        def save_block(step: BlockStep) -> None:
            writer.write(step.block.state_dict(prefix=f"{step.name}."))

        report = compress_model(model, tokenizer, cfg, offload=offload, on_block_done=save_block)
        writer.copy(checkpoint, {name: offload.checkpoint_key(name) for name in offload.outside_blocks()})
        writer.finish()
        model.config.quantization_config = cfg
        model.config.dtype = dtype
        model.config.save_pretrained(tmp)
        if (Path(path) / "generation_config.json").is_file():
            GenerationConfig.from_pretrained(path).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        atomic_write_text(Path(tmp) / "README.md", make_card(model))
        report.save(tmp)
    logger.info("Compressed %s from disk into %s (peak RSS %.0f MiB)", path, save_directory, report.peak_rss_mib)
    return report
