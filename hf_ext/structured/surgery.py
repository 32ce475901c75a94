"""Physical removal of attention heads and MLP channels, and the gates that simulate it.

Groups (the units that are removed together):

* Attention, ``kv_group`` granularity: key/value head ``u`` with its query heads ``u*G .. u*G+G-1`` (``G`` query
  heads share one key/value head; transformers' ``repeat_kv`` lays them out contiguously). Removing it drops those
  rows of ``q``/``k``/``v`` and the matching input columns of ``o``. For multi-head attention (OPT) ``G = 1``.
* Attention, ``query`` granularity: single query heads (rows of ``q``, columns of ``o``); the same number is removed
  from every key/value group so the groups stay equal in size, as ``repeat_kv`` requires. Keys and values are kept.
* MLP channel ``c``: row ``c`` of every input projection (gate and up, or ``fc1``) and column ``c`` of the output
  projection (``down`` / ``fc2``). Biases of the output projections are kept.

How each family reads head counts at run time (transformers 5.24), which is why the per-module attributes are
rewritten after surgery (the model config keeps describing the original shapes):

* OPT: ``OPTAttention`` reshapes with ``self.num_heads`` -> set to the kept query heads.
* Llama / Mistral / Qwen2 / Gemma / Gemma 3: reshapes use ``-1`` heads and ``self.head_dim`` (unchanged), and the
  eager and SDPA kernels repeat keys/values ``self.num_key_value_groups`` times -> set to kept heads / kept kv heads.
* Every family: the KV cache grows from the key/value tensors it is given (``DynamicCache``), so generation works;
  a preallocated ``StaticCache`` sized from the config would not match and is not supported.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..common.arch import ArchSpec, attention_layout, block_linears, get_arch, get_blocks, set_submodule


@dataclass(frozen=True)
class BlockLayout:
    """Current (possibly already pruned) head and channel counts of one decoder block."""

    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    hidden_size: int

    @property
    def group_size(self) -> int:
        return self.num_heads // self.num_kv_heads

    def as_dict(self) -> dict[str, int]:
        return {"num_heads": self.num_heads, "num_kv_heads": self.num_kv_heads,
                "intermediate_size": self.intermediate_size}


def block_layout(block: nn.Module, arch: ArchSpec, head_dim: int) -> BlockLayout:
    """Read a block's layout from its module shapes (not from the config, which keeps the original counts)."""
    q = block.get_submodule(arch.q).weight
    k = block.get_submodule(arch.k).weight
    down = block.get_submodule(arch.down).weight
    return BlockLayout(q.shape[0] // head_dim, k.shape[0] // head_dim, head_dim, down.shape[1], down.shape[0])


def model_layouts(model: nn.Module) -> list[BlockLayout]:
    arch = get_arch(model)
    head_dim = attention_layout(model).head_dim
    return [block_layout(b, arch, head_dim) for b in get_blocks(model)]


def resolve_granularity(requested: str, layout: BlockLayout) -> str:
    """``auto`` -> ``kv_group`` with several key/value heads, else ``query``; rejects impossible choices."""
    if requested == "auto":
        return "kv_group" if layout.num_kv_heads > 1 else "query"
    if requested == "query" and layout.group_size == 1:
        raise ValueError(
            "head_granularity='query' needs grouped-query attention (several query heads per key/value head); this "
            f"model has {layout.num_heads} heads and {layout.num_kv_heads} key/value heads. Use 'kv_group'."
        )
    return requested


def block_prunable_params(block: nn.Module, arch: ArchSpec) -> int:
    """Parameters (weights and biases) of the attention and MLP projections of one block."""
    return sum(p.numel() for lin in block_linears(block, arch).values() for p in lin.parameters())


def count_prunable(model: nn.Module) -> int:
    """Parameters (weights and biases) of every attention and MLP projection of every block."""
    arch = get_arch(model)
    return sum(block_prunable_params(b, arch) for b in get_blocks(model))


def _has_bias(block: nn.Module, path: str) -> int:
    return int(block.get_submodule(path).bias is not None)


def unit_params(block: nn.Module, arch: ArchSpec, layout: BlockLayout, granularity: str) -> tuple[int, int, int]:
    """(head units, parameters removed per head-removal step, parameters per MLP channel) of one block.

    A head-removal step is one key/value group (``kv_group``) or one query head from every group (``query``).
    """
    hd, hidden = layout.head_dim, layout.hidden_size
    q_head = hd * (hidden + _has_bias(block, arch.q)) + hidden * hd
    kv_head = hd * (hidden + _has_bias(block, arch.k)) + hd * (hidden + _has_bias(block, arch.v))
    if granularity == "kv_group":
        steps, per_step = layout.num_kv_heads, layout.group_size * q_head + kv_head
    else:
        steps, per_step = layout.group_size, layout.num_kv_heads * q_head
    channel = sum(hidden + _has_bias(block, p) for p in arch.up) + hidden
    return steps, per_step, channel


def head_units(layout: BlockLayout, granularity: str) -> int:
    """Number of scored head units: key/value groups or query heads."""
    return layout.num_kv_heads if granularity == "kv_group" else layout.num_heads


def o_column_gate(unit_gate: torch.Tensor, layout: BlockLayout, granularity: str) -> torch.Tensor:
    """Expand a per-unit gate to the input columns of the output projection."""
    per_unit = layout.group_size * layout.head_dim if granularity == "kv_group" else layout.head_dim
    return unit_gate.repeat_interleave(per_unit, dim=-1)


@contextlib.contextmanager
def gated(model: nn.Module, gates: Sequence[tuple[torch.Tensor, torch.Tensor] | None],
          granularity: Sequence[str]) -> Iterator[None]:
    """Scale each head unit's and MLP channel's output (feature map) by a gate while the block runs.

    ``gates[i] = (head_unit_gate, channel_gate)`` for block ``i`` (``None``: untouched). Gates of 1 leave the model
    unchanged; gates of 0 compute exactly what the model computes with those groups removed. A gate of shape
    ``(batch, units)`` gives every sequence of the batch its own gate (zeroth-order estimates perturb each
    calibration window in its own direction); gates may require grad (the autograd reference of the estimate).
    """
    arch = get_arch(model)
    head_dim = attention_layout(model).head_dim
    handles = []

    def scaler(module: nn.Module, col_gate: torch.Tensor):
        col_gate = col_gate.to(module.weight.device)  # once, not on every forward

        def hook(mod, args):
            x, g = args[0], col_gate.to(args[0].dtype)
            if g.dim() == 2:  # per sequence: (batch, cols) on (batch, tokens, cols) or OPT's (batch * tokens, cols)
                g = g[:, None, :] if x.dim() == 3 else g.repeat_interleave(x.shape[0] // g.shape[0], dim=0)
            return (x * g, *args[1:])

        return hook

    try:
        for i, block in enumerate(get_blocks(model)):
            if gates[i] is None:
                continue
            layout = block_layout(block, arch, head_dim)
            head_gate, channel_gate = gates[i]
            col = o_column_gate(head_gate, layout, granularity[i])
            o_proj, down = block.get_submodule(arch.o), block.get_submodule(arch.down)
            handles.append(o_proj.register_forward_pre_hook(scaler(o_proj, col)))
            handles.append(down.register_forward_pre_hook(scaler(down, channel_gate)))
        yield
    finally:
        for h in handles:
            h.remove()


def _sliced_linear(lin: nn.Linear, rows: torch.Tensor | None, cols: torch.Tensor | None) -> nn.Linear:
    w = lin.weight.data
    if rows is not None:
        w = w.index_select(0, rows.to(w.device))
    if cols is not None:
        w = w.index_select(1, cols.to(w.device))
    b = lin.bias
    new = nn.Linear(w.shape[1], w.shape[0], bias=b is not None, device=w.device, dtype=w.dtype)
    new.weight.data.copy_(w)
    new.weight.requires_grad_(lin.weight.requires_grad)
    if b is not None:
        new.bias.data.copy_(b.data if rows is None else b.data.index_select(0, rows.to(b.device)))
    return new


def _head_rows(heads: torch.Tensor, head_dim: int) -> torch.Tensor:
    return (heads[:, None] * head_dim + torch.arange(head_dim)).reshape(-1)


def set_attention_counts(block: nn.Module, arch: ArchSpec, num_heads: int, num_kv_heads: int,
                         intermediate_size: int) -> None:
    """Rewrite the per-module head / channel counts that the families' forward code reads (see module doc)."""
    attn = block.get_submodule(arch.attention)
    for name in ("num_heads", "num_attention_heads"):
        if hasattr(attn, name):
            setattr(attn, name, num_heads)
    for name in ("num_key_value_heads", "num_kv_heads"):
        if hasattr(attn, name):
            setattr(attn, name, num_kv_heads)
    if hasattr(attn, "num_key_value_groups"):
        attn.num_key_value_groups = num_heads // num_kv_heads
    mlp = block.get_submodule(arch.mlp) if arch.mlp else block
    if hasattr(mlp, "intermediate_size"):
        mlp.intermediate_size = intermediate_size


def prune_block(block: nn.Module, arch: ArchSpec, layout: BlockLayout, keep_heads: torch.Tensor,
                keep_kv: torch.Tensor, keep_channels: torch.Tensor) -> BlockLayout:
    """Replace the block's projections by smaller ``nn.Linear`` modules keeping the given heads and channels.

    Args:
        keep_heads: Sorted indices of the query heads kept.
        keep_kv: Sorted indices of the key/value heads kept.
        keep_channels: Sorted indices of the MLP channels kept.
    """
    if len(keep_heads) == 0 or len(keep_kv) == 0 or len(keep_channels) == 0:
        raise ValueError("A block must keep at least one head, one key/value head and one MLP channel.")
    if len(keep_heads) % len(keep_kv):
        raise ValueError(f"{len(keep_heads)} query heads cannot share {len(keep_kv)} key/value heads evenly.")
    hd = layout.head_dim
    q_rows, kv_rows = _head_rows(keep_heads, hd), _head_rows(keep_kv, hd)
    for path, rows, cols in ((arch.q, q_rows, None), (arch.k, kv_rows, None), (arch.v, kv_rows, None),
                             (arch.o, None, q_rows), *((p, keep_channels, None) for p in arch.up),
                             (arch.down, None, keep_channels)):
        set_submodule(block, path, _sliced_linear(block.get_submodule(path), rows, cols))
    set_attention_counts(block, arch, len(keep_heads), len(keep_kv), len(keep_channels))
    return BlockLayout(len(keep_heads), len(keep_kv), hd, len(keep_channels), layout.hidden_size)


def resize_skeleton(model: nn.Module, layer_shapes: Sequence[dict[str, int]]) -> int:
    """Re-create every block's projections with the stored kept shapes (on the model's device, e.g. meta).

    Returns the number of linears replaced. Raises if the stored shapes do not fit the model.
    """
    arch = get_arch(model)
    blocks = get_blocks(model)
    head_dim = attention_layout(model).head_dim
    if len(layer_shapes) != len(blocks):
        raise ValueError(f"layer_shapes describes {len(layer_shapes)} blocks, the model has {len(blocks)}.")
    replaced = 0
    for block, shape in zip(blocks, layer_shapes):
        heads, kv, inter = shape["num_heads"], shape["num_kv_heads"], shape["intermediate_size"]
        hidden = block.get_submodule(arch.down).weight.shape[0]
        dims = {arch.q: (hidden, heads * head_dim), arch.k: (hidden, kv * head_dim),
                arch.v: (hidden, kv * head_dim), arch.o: (heads * head_dim, hidden), arch.down: (inter, hidden),
                **{p: (hidden, inter) for p in arch.up}}
        for path, (fan_in, fan_out) in dims.items():
            old = block.get_submodule(path)
            if tuple(old.weight.shape) == (fan_out, fan_in):
                continue
            new = nn.Linear(fan_in, fan_out, bias=old.bias is not None, device=old.weight.device,
                            dtype=old.weight.dtype)
            set_submodule(block, path, new)
            replaced += 1
        set_attention_counts(block, arch, heads, kv, inter)
    return replaced
