"""Streaming a checkpoint from disk one decoder block at a time (for models larger than memory).

:class:`SafetensorsCheckpoint` reads single tensors of a safetensors checkpoint (one file or a sharded index);
:func:`empty_model` builds the model with its parameters on the meta device (buffers, e.g. rotary frequencies, are
computed for real); :class:`DiskOffload` is the block loader that :class:`~hf_ext.common.capture.SequentialRunner`
calls: it materializes a block's weights from the checkpoint before the block runs and drops them afterwards, so
only one block is ever in memory besides the embeddings and the calibration activations. :class:`ShardWriter`
writes a ``save_pretrained``-style sharded safetensors folder block by block.

Typical use (what ``hf_ext.compression.compress_checkpoint`` does)::

    ckpt = SafetensorsCheckpoint(path)
    model = empty_model(path, torch.float32)
    offload = DiskOffload(model, ckpt)
    offload.load_outside_blocks()             # embeddings, final norm: what runs outside the blocks
    runner = SequentialRunner(model, ids, offload=offload)
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import torch
from accelerate import init_empty_weights
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel
from transformers.utils import logging

from .arch import get_arch
from .utils import atomic_write_json, release_free_memory

logger = logging.get_logger(__name__)

SAFE_INDEX = "model.safetensors.index.json"
SAFE_SINGLE = "model.safetensors"
_COPY_CHUNK = 64 << 20  # bytes per read when copying a stored tensor without loading it


class SafetensorsCheckpoint:
    """Lazy, tensor-by-tensor access to a safetensors checkpoint folder.

    Args:
        path: A folder holding ``model.safetensors`` or ``model.safetensors.index.json`` plus its shards.

    Raises:
        FileNotFoundError: The folder holds no safetensors weights (``.bin`` checkpoints cannot be streamed).
    """

    def __init__(self, path: str | os.PathLike):
        self.folder = Path(path)
        index, single = self.folder / SAFE_INDEX, self.folder / SAFE_SINGLE
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
            self.weight_map = {k: self.folder / f for k, f in weight_map.items()}
        elif single.is_file():
            with safe_open(single, framework="pt") as f:
                self.weight_map = {k: single for k in f.keys()}
        else:
            raise FileNotFoundError(
                f"{self.folder} holds no safetensors weights ({SAFE_SINGLE} or {SAFE_INDEX}); streaming from disk "
                "needs safetensors: load the model once and save it with save_pretrained()."
            )
        missing = sorted({str(p) for p in self.weight_map.values() if not p.is_file()})
        if missing:
            raise FileNotFoundError(f"Shards named in {index} are missing: {', '.join(missing)}.")

    def resolve(self, name: str, base_prefix: str = "") -> str | None:
        """The checkpoint key of model tensor ``name``; checkpoints saved from the base model (e.g. Hub OPT ones)
        lack the ``base_model_prefix``. ``None`` when absent."""
        if name in self.weight_map:
            return name
        if base_prefix and name.startswith(base_prefix + "."):
            stripped = name[len(base_prefix) + 1 :]
            if stripped in self.weight_map:
                return stripped
        return None

    def load(self, keys: list[str], device: torch.device | str = "cpu", dtype: torch.dtype | None = None
             ) -> dict[str, torch.Tensor]:
        """Read tensors ``keys`` (floating-point ones cast to ``dtype``) onto ``device``.

        Each file is opened for this call only, so no handle (and no memory map) outlives the tensors read.
        """
        by_file: dict[Path, list[str]] = {}
        for key in keys:
            by_file.setdefault(self.weight_map[key], []).append(key)
        out = {}
        for file, names in by_file.items():
            with safe_open(file, framework="pt") as f:
                for key in names:
                    tensor = f.get_tensor(key)
                    if dtype is not None and tensor.is_floating_point():
                        tensor = tensor.to(dtype)
                    out[key] = tensor.to(device)
        return out

    def copy_raw(self, names: dict[str, str], dst: str | os.PathLike) -> int:
        """Write tensors ``{out_name: checkpoint_key}`` into a new safetensors file by copying their stored bytes.

        safetensors' own writer needs every tensor in memory at once; a Gemma embedding alone is 0.7 GB in float32,
        so we copy byte ranges of the (documented) format instead: an 8-byte little-endian header size, a JSON
        header of dtype / shape / data_offsets, then the raw data. Returns the data bytes written.
        """
        entries, sources, offset, headers = {}, [], 0, {}
        for out_name, key in names.items():
            file = self.weight_map[key]
            if file not in headers:
                headers[file] = read_safetensors_header(file)
            header, data_start = headers[file]
            meta = header[key]
            begin, end = meta["data_offsets"]
            span = [offset, offset + end - begin]
            entries[out_name] = {"dtype": meta["dtype"], "shape": meta["shape"], "data_offsets": span}
            sources.append((file, data_start + begin, end - begin))
            offset += end - begin
        head = json.dumps({"__metadata__": {"format": "pt"}, **entries}, separators=(",", ":")).encode()
        head += b" " * (-len(head) % 8)  # keep the data 8-byte aligned, as safetensors does
        with open(dst, "wb") as out:
            out.write(struct.pack("<Q", len(head)))
            out.write(head)
            for file, start, size in sources:
                with open(file, "rb") as src:
                    src.seek(start)
                    while size:
                        chunk = src.read(min(size, _COPY_CHUNK))
                        if not chunk:
                            raise OSError(f"{file} ended early: it is truncated.")
                        out.write(chunk)
                        size -= len(chunk)
        return offset


def read_safetensors_header(file: str | os.PathLike) -> tuple[dict, int]:
    """The JSON header of a safetensors file and the offset where its data starts; ``ValueError`` if malformed."""
    size = os.path.getsize(file)
    try:
        with open(file, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size - 8:
                raise ValueError("header longer than the file")
            return json.loads(f.read(n)), 8 + n
    except (struct.error, UnicodeDecodeError) as e:
        raise ValueError(f"{file} is not a valid safetensors file ({e})") from None


def empty_model(path: str | os.PathLike, dtype: torch.dtype) -> PreTrainedModel:
    """The causal LM of ``path``'s config with every parameter on the meta device (no memory, no file read)."""
    config = AutoConfig.from_pretrained(path)
    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.name_or_path = str(path)
    model.eval()
    return model


def _set_tensor(module: nn.Module, name: str, value: torch.Tensor) -> None:
    owner_name, _, leaf = name.rpartition(".")
    owner = module.get_submodule(owner_name) if owner_name else module
    if leaf in owner._parameters:
        old = owner._parameters[leaf]
        owner._parameters[leaf] = nn.Parameter(value, requires_grad=old.requires_grad)
    else:
        owner._buffers[leaf] = value


class DiskOffload:
    """Block loader for :class:`~hf_ext.common.capture.SequentialRunner`: weights come from the checkpoint.

    Args:
        model: The model from :func:`empty_model` (parameters on meta).
        checkpoint: Its checkpoint.
        dtype: Dtype floating-point weights are loaded in (default: the model's).
    """

    def __init__(self, model: PreTrainedModel, checkpoint: SafetensorsCheckpoint, dtype: torch.dtype | None = None):
        self.model = model
        self.checkpoint = checkpoint
        self.dtype = dtype or model.dtype
        self.arch = get_arch(model)
        self.prefix = model.base_model_prefix or ""

    def checkpoint_key(self, name: str) -> str:
        key = self.checkpoint.resolve(name, self.prefix)
        if key is None:
            raise KeyError(f"The checkpoint at {self.checkpoint.folder} has no tensor {name!r} (nor one without the "
                           f"{self.prefix!r} prefix); it does not match this {self.arch.family} model.")
        return key

    def _materialize(self, module: nn.Module, names: list[str], prefix: str, device: torch.device) -> None:
        keys = {name: self.checkpoint_key(f"{prefix}{name}") for name in names}
        loaded = self.checkpoint.load(list(keys.values()), device, self.dtype)
        for name, key in keys.items():
            _set_tensor(module, name, loaded[key])

    def tied_names(self) -> set[str]:
        """Model tensors that are tied to another one (absent from checkpoints, e.g. ``lm_head.weight``)."""
        if not getattr(self.model.config, "tie_word_embeddings", False):
            return set()
        return set(getattr(self.model, "_tied_weights_keys", None) or ())  # a dict {target: source} or a list

    def outside_blocks(self) -> dict[str, torch.Tensor]:
        """Every stored tensor outside the decoder blocks (embeddings, final norm, an untied head), by name."""
        blocks = self.arch.blocks + "."
        tied = self.tied_names()
        return {n: t for n, t in self.model.state_dict(keep_vars=True).items()
                if not n.startswith(blocks) and n not in tied}

    def load_outside_blocks(self, device: torch.device | str = "cpu") -> None:
        """Load the embeddings, final norm and head (everything but the blocks), then re-tie tied weights."""
        names = [n for n, t in self.outside_blocks().items() if t.is_meta]
        self._materialize(self.model, names, "", device)
        if self.tied_names():
            self.model.tie_weights()

    # ----------------------------------------------------------------------------------- SequentialRunner hooks
    def onload(self, index: int, name: str, block: nn.Module, device: torch.device) -> None:
        names = [n for n, t in [*block.named_parameters(), *block.named_buffers()] if t.is_meta]
        self._materialize(block, names, f"{name}.", device)

    def offload(self, index: int, name: str, block: nn.Module) -> None:
        block.to("meta")  # frees the weights; a later pass reads them from the checkpoint again
        release_free_memory()


class ShardWriter:
    """Write a sharded safetensors checkpoint piece by piece, with the index ``from_pretrained`` reads.

    Args:
        folder: Output folder (normally a temporary one from :func:`~hf_ext.common.utils.atomic_dir`).
        n_shards: How many shards will be written (the ``-of-`` in the file names).
    """

    def __init__(self, folder: str | os.PathLike, n_shards: int):
        self.folder = Path(folder)
        self.n_shards = n_shards
        self.weight_map: dict[str, str] = {}
        self.total_size = 0
        self._next = 1

    def _name(self) -> str:
        if self._next > self.n_shards:
            raise RuntimeError(f"ShardWriter was sized for {self.n_shards} shards.")
        name = f"model-{self._next:05d}-of-{self.n_shards:05d}.safetensors"
        self._next += 1
        return name

    def write(self, tensors: dict[str, torch.Tensor]) -> None:
        """One shard from tensors in memory (cloned contiguous on the CPU: safetensors refuses shared storage)."""
        name = self._name()
        tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
        save_file(tensors, str(self.folder / name), metadata={"format": "pt"})
        self._record(name, {k: v.numel() * v.element_size() for k, v in tensors.items()})

    def copy(self, checkpoint: SafetensorsCheckpoint, names: dict[str, str]) -> None:
        """One shard copied from ``checkpoint`` without loading it (``{out_name: checkpoint_key}``)."""
        name = self._name()
        size = checkpoint.copy_raw(names, self.folder / name)
        self._record(name, dict.fromkeys(names, 0))
        self.total_size += size

    def _record(self, shard: str, sizes: dict[str, int]) -> None:
        for k, size in sizes.items():
            self.weight_map[k] = shard
            self.total_size += size

    def finish(self) -> None:
        if self._next != self.n_shards + 1:
            raise RuntimeError(f"ShardWriter wrote {self._next - 1} of {self.n_shards} shards.")
        atomic_write_json(self.folder / SAFE_INDEX, {"metadata": {"total_size": self.total_size},
                                                     "weight_map": dict(sorted(self.weight_map.items()))})

