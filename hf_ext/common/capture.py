"""Layer-by-layer (sequential) execution for calibration-based methods.

The inputs of every decoder block are captured once on calibration data by running the model with its blocks
short-circuited (each block records its keyword arguments, i.e. masks and position embeddings, which differ per
block in models like Gemma 3 that mix sliding and full attention). Then blocks run one at a time: onload to the
execution device, process (hooks collect statistics, weights get rewritten), run again to produce the next block's
inputs, offload. Peak accelerator memory is one block plus the calibration activations.

Typical use::

    runner = SequentialRunner(model, calibration_ids)
    for step in runner:                      # step.block is on the execution device
        with collect_inputs(step.linears) as stats:
            step.run()                       # calibration forward through this block only
        rewrite(step.block, stats)
        step.advance()                       # outputs of the rewritten block feed the next one
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from .arch import ArchSpec, block_linears, get_arch, get_blocks
from .utils import execution_device


class _StopForward(Exception):
    pass


def _to(obj: Any, device: torch.device, memo: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None) -> Any:
    """Move tensors in nested containers; ``memo`` makes a tensor shared by several blocks' kwargs (masks, rotary
    cos / sin) one copy on ``device`` instead of one per block. It keeps the source alive so ``id`` stays unique."""
    if isinstance(obj, torch.Tensor):
        if memo is None:
            return obj.to(device, non_blocking=True)
        if id(obj) not in memo:
            memo[id(obj)] = (obj, obj.to(device, non_blocking=True))
        return memo[id(obj)][1]
    if isinstance(obj, tuple):
        return tuple(_to(o, device, memo) for o in obj)
    if isinstance(obj, list):
        return [_to(o, device, memo) for o in obj]
    if isinstance(obj, dict):
        return {k: _to(v, device, memo) for k, v in obj.items()}
    return obj


def _hidden(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


@dataclass
class CapturedInputs:
    """Inputs of the decoder blocks: ``hidden[b]`` for batch b, and ``kwargs[i][b]`` for block i, batch b."""

    hidden: list[torch.Tensor]
    kwargs: list[list[dict[str, Any]]] = field(default_factory=list)


@torch.no_grad()
def capture_block_inputs(
    model: nn.Module, input_ids: torch.Tensor, batch_size: int = 1, device: torch.device | None = None,
    attention_mask: torch.Tensor | None = None,
) -> CapturedInputs:
    """Run ``model`` with every block short-circuited and record each block's inputs.

    Only the embedding and whatever precedes block 0 execute; nothing after the last block runs.
    """
    device = device or execution_device()
    blocks = get_blocks(model)
    captured = CapturedInputs(hidden=[], kwargs=[[] for _ in blocks])
    originals = [b.forward for b in blocks]
    memo: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # per batch: blocks share their kwargs' tensors

    def make_recorder(i: int):
        def record(*args, **kwargs):
            hidden = args[0] if args else kwargs.pop("hidden_states")
            kwargs = {k: v for k, v in kwargs.items() if k not in ("cache", "past_key_values", "use_cache")}
            captured.kwargs[i].append(_to(kwargs, device, memo))
            if i == 0:
                captured.hidden.append(hidden.to(device))
            if i == len(blocks) - 1:
                raise _StopForward
            return hidden

        return record

    model_device = model.get_input_embeddings().weight.device  # blocks may sit on meta (streamed from disk)
    try:
        for i, b in enumerate(blocks):
            b.forward = make_recorder(i)
        for s in range(0, len(input_ids), batch_size):
            ids = input_ids[s : s + batch_size].to(model_device)
            mask = None if attention_mask is None else attention_mask[s : s + batch_size].to(model_device)
            memo.clear()
            try:
                model(input_ids=ids, attention_mask=mask, use_cache=False)
            except _StopForward:
                pass
    finally:
        for b, fwd in zip(blocks, originals):
            b.forward = fwd
    return captured


@dataclass
class BlockStep:
    """One decoder block during a sequential pass."""

    index: int
    name: str
    block: nn.Module
    arch: ArchSpec
    runner: SequentialRunner

    @property
    def linears(self) -> dict[str, nn.Module]:
        return block_linears(self.block, self.arch)

    @torch.no_grad()
    def run(self) -> list[torch.Tensor]:
        """Forward the current inputs through this block (hooks see them); returns the outputs."""
        inputs = self.runner.inputs
        return [
            _hidden(self.block(h, **kw)) for h, kw in zip(inputs.hidden, inputs.kwargs[self.index])
        ]

    def advance(self, outputs: list[torch.Tensor] | None = None) -> None:
        """Make this block's outputs (recomputed unless given) the inputs of the next block."""
        self.runner.inputs.hidden = outputs if outputs is not None else self.run()


class SequentialRunner:
    """Iterate over decoder blocks with captured calibration inputs, one block on the device at a time.

    Args:
        model: A causal LM of a supported family.
        input_ids: ``(n, seqlen)`` calibration windows.
        batch_size: Windows per block forward.
        device: Where each block runs (default: CUDA when present, else CPU). Blocks go back to where they were.
        progress: Show a progress bar over blocks.
        offload: Where blocks come from and go back to: ``None`` moves each block to ``device`` and back; a
            :class:`~hf_ext.common.offload.DiskOffload` reads it from the checkpoint and frees it afterwards.
    """

    def __init__(self, model: nn.Module, input_ids: torch.Tensor, batch_size: int = 1,
                 device: torch.device | None = None, progress: bool = True, desc: str = "blocks",
                 offload: BlockOffload | None = None):
        self.model = model
        self.offload = offload or MoveBlocks()
        self.arch = get_arch(model)
        self.device = device or execution_device()
        self.progress = progress
        self.desc = desc
        self.inputs = capture_block_inputs(model, input_ids, batch_size=batch_size, device=self.device)

    def __iter__(self) -> Iterator[BlockStep]:
        blocks = get_blocks(self.model)
        for i in tqdm(range(len(blocks)), desc=self.desc, disable=not self.progress):
            block, name = blocks[i], f"{self.arch.blocks}.{i}"
            self.offload.onload(i, name, block, self.device)
            try:
                yield BlockStep(i, name, block, self.arch, self)
            finally:
                self.offload.offload(i, name, block)


class BlockOffload(Protocol):
    """How :class:`SequentialRunner` brings a block onto the execution device and puts it away afterwards."""

    def onload(self, index: int, name: str, block: nn.Module, device: torch.device) -> None: ...

    def offload(self, index: int, name: str, block: nn.Module) -> None: ...


class MoveBlocks:
    """The in-memory case: move the block to the execution device, then back where it was."""

    def __init__(self) -> None:
        self._home: dict[int, torch.device] = {}

    def onload(self, index: int, name: str, block: nn.Module, device: torch.device) -> None:
        self._home[index] = next(block.parameters()).device
        block.to(device)

    def offload(self, index: int, name: str, block: nn.Module) -> None:
        block.to(self._home.pop(index))


@torch.no_grad()
def forward_block_by_block(
    model: nn.Module, input_ids: torch.Tensor, device: torch.device | None = None
) -> torch.Tensor:
    """Logits computed one block at a time through :class:`SequentialRunner` (equals ``model(input_ids).logits``)."""
    runner = SequentialRunner(model, input_ids, batch_size=len(input_ids), device=device, progress=False)
    for step in runner:
        step.advance()
    hidden = runner.inputs.hidden[0]
    arch = runner.arch
    norm = getattr(model.get_submodule(arch.final_norm.rpartition(".")[0]), arch.final_norm.rpartition(".")[2])
    tail = [m for m in (norm, getattr(model.model.decoder, "project_out", None) if arch.family == "opt" else None,
                        model.get_output_embeddings()) if m is not None]  # OPT-350m has no final norm
    homes = [next(m.parameters()).device for m in tail]
    try:  # the tail runs on the execution device like the blocks, then goes back home (a tied head is the embedding)
        for m in tail:
            hidden = m.to(hidden.device)(hidden)
    finally:
        for m, home in zip(tail, homes):
            m.to(home)
    logits = hidden
    softcap = getattr(model.config, "final_logit_softcapping", None)
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return logits


class InputStats:
    """Statistics of a linear's inputs over calibration tokens: sum of squares per column and the Gram matrix.

    Everything calibration-based needs one of these (Wanda: column norms; SparseGPT/GPTQ: H = 2/n X X^T), so
    they are collected once by one hook.
    """

    def __init__(self, in_features: int, device: torch.device, gram: bool):
        self.n = 0
        self.sq_sum = torch.zeros(in_features, device=device, dtype=torch.float32)
        self.gram = torch.zeros(in_features, in_features, device=device, dtype=torch.float32) if gram else None

    def add(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).float()
        self.n += x.shape[0]
        self.sq_sum += (x * x).sum(0)
        if self.gram is not None:
            self.gram += x.T @ x

    @property
    def col_norm(self) -> torch.Tensor:
        """sqrt(mean over tokens of x_j^2): the Wanda activation norm per input column."""
        return (self.sq_sum / max(self.n, 1)).sqrt()

    @property
    def hessian(self) -> torch.Tensor:
        """H = 2/n sum x x^T (the SparseGPT / GPTQ layer-wise Hessian)."""
        return self.gram * (2.0 / max(self.n, 1))


class collect_inputs:
    """Context manager: hook ``linears`` (name -> module) and accumulate :class:`InputStats` for each."""

    def __init__(self, linears: dict[str, nn.Module], gram: bool = False):
        self.linears = linears
        self.gram = gram
        self.stats: dict[str, InputStats] = {}
        self._handles = []

    def __enter__(self) -> dict[str, InputStats]:
        for name, mod in self.linears.items():
            w = mod.weight
            self.stats[name] = InputStats(w.shape[1], w.device, self.gram)
            self._handles.append(mod.register_forward_pre_hook(lambda m, args, s=self.stats[name]: s.add(args[0])))
        return self.stats

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
