"""Architecture map: where decoder blocks, attention and MLP projections live, per model family.

Per-family facts are plain data keyed by ``config.model_type`` (peft's habit), so adding a family is one entry.
Everything in hf-ext that needs to find a block, a projection or a head count asks this module.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class ArchSpec:
    """Where things are inside a causal LM of one family (paths relative to the model or to a block).

    Attributes:
        family: Short family name ("opt", "llama", "gemma").
        blocks: Path of the ``nn.ModuleList`` of decoder blocks.
        embed: Path of the token embedding.
        final_norm: Path of the norm after the last block.
        q, k, v, o: Paths of the attention projections inside a block.
        up: Paths of the MLP input projections inside a block (gate first where there is one).
        down: Path of the MLP output projection inside a block.
        attention: Path of the attention module inside a block.
        mlp: Path of the MLP module inside a block ("" when the MLP lives directly in the block, as in OPT).
    """

    family: str
    blocks: str
    embed: str
    final_norm: str
    q: str
    k: str
    v: str
    o: str
    up: tuple[str, ...]
    down: str
    attention: str = "self_attn"
    mlp: str = "mlp"

    @property
    def linears(self) -> tuple[str, ...]:
        """Every prunable linear of a block, in execution order."""
        return (self.q, self.k, self.v, self.o, *self.up, self.down)


_LLAMA_LIKE = dict(
    blocks="model.layers", embed="model.embed_tokens", final_norm="model.norm",
    q="self_attn.q_proj", k="self_attn.k_proj", v="self_attn.v_proj", o="self_attn.o_proj",
    up=("mlp.gate_proj", "mlp.up_proj"), down="mlp.down_proj",
)

ARCHITECTURES: dict[str, ArchSpec] = {
    "opt": ArchSpec(
        family="opt", blocks="model.decoder.layers", embed="model.decoder.embed_tokens",
        final_norm="model.decoder.final_layer_norm", q="self_attn.q_proj", k="self_attn.k_proj",
        v="self_attn.v_proj", o="self_attn.out_proj", up=("fc1",), down="fc2", mlp="",
    ),
    "llama": ArchSpec(family="llama", **_LLAMA_LIKE),
    "mistral": ArchSpec(family="llama", **_LLAMA_LIKE),
    "qwen2": ArchSpec(family="llama", **_LLAMA_LIKE),
    "gemma": ArchSpec(family="gemma", **_LLAMA_LIKE),
    "gemma2": ArchSpec(family="gemma", **_LLAMA_LIKE),
    "gemma3_text": ArchSpec(family="gemma", **_LLAMA_LIKE),
}


class UnsupportedArchitectureError(ValueError):
    """Raised for a model whose ``model_type`` hf-ext has no map for."""


def get_arch(model_or_config) -> ArchSpec:
    """The :class:`ArchSpec` of a model (or config); raises naming the supported families otherwise."""
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    if model_type not in ARCHITECTURES:
        raise UnsupportedArchitectureError(
            f"Architecture {model_type!r} is not supported by hf-ext; supported model types: "
            f"{', '.join(sorted(ARCHITECTURES))} (OPT, Llama and Gemma families)."
        )
    return ARCHITECTURES[model_type]


def get_blocks(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks of ``model``."""
    return model.get_submodule(get_arch(model).blocks)


def block_linears(block: nn.Module, arch: ArchSpec) -> dict[str, nn.Module]:
    """Prunable linears of one block by their path in the block (works on replaced/compressed linears too)."""
    return {name: block.get_submodule(name) for name in arch.linears}


def named_block_linears(model: nn.Module) -> dict[str, nn.Module]:
    """Every prunable linear of every block, keyed by its full module name."""
    arch = get_arch(model)
    out = {}
    for i, block in enumerate(get_blocks(model)):
        for name, module in block_linears(block, arch).items():
            out[f"{arch.blocks}.{i}.{name}"] = module
    return out


@dataclass(frozen=True)
class AttentionLayout:
    num_heads: int
    num_kv_heads: int
    head_dim: int

    @property
    def group_size(self) -> int:
        """Query heads sharing one key/value head (1 without grouped-query attention)."""
        return self.num_heads // self.num_kv_heads


def attention_layout(model_or_config) -> AttentionLayout:
    """Head counts and head size from the config."""
    config = getattr(model_or_config, "config", model_or_config)
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return AttentionLayout(heads, kv, head_dim)


def set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    """Replace the module at dotted ``path`` inside ``root``."""
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, name, module)


def is_skipped(name: str, modules_to_not_convert: list[str] | None) -> bool:
    """Whether a module name contains one of the (non-empty) ``modules_to_not_convert`` fragments.

    The one rule every method applies to ``modules_to_not_convert``, so a fragment means the same everywhere.
    """
    return any(frag and frag in name for frag in modules_to_not_convert or ())
