import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from hf_ext.common.arch import (
    UnsupportedArchitectureError,
    attention_layout,
    block_linears,
    get_arch,
    get_blocks,
    named_block_linears,
    set_submodule,
)
from hf_ext.common.models import tiny_model

from .conftest import FAMILIES


@pytest.mark.parametrize("family", FAMILIES)
def test_arch_map_finds_blocks_and_projections(family):
    model, _ = tiny_model(family)
    arch = get_arch(model)
    assert arch.family == family
    blocks = get_blocks(model)
    assert len(blocks) == model.config.num_hidden_layers
    linears = block_linears(blocks[0], arch)
    hidden = model.config.hidden_size
    layout = attention_layout(model)
    assert linears[arch.q].weight.shape == (layout.num_heads * layout.head_dim, hidden)
    assert linears[arch.k].weight.shape == (layout.num_kv_heads * layout.head_dim, hidden)
    assert linears[arch.down].weight.shape[0] == hidden
    assert model.get_submodule(arch.embed).weight.shape[0] == model.config.vocab_size
    assert len(named_block_linears(model)) == len(blocks) * len(arch.linears)


def test_attention_layout_reports_grouped_query_attention():
    model, _ = tiny_model("llama")
    layout = attention_layout(model)
    assert (layout.num_heads, layout.num_kv_heads, layout.group_size) == (4, 2, 2)


def test_unsupported_architecture_names_supported_families():
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50))
    with pytest.raises(UnsupportedArchitectureError, match="gpt2.*opt.*llama|supported model types"):
        get_arch(model)


def test_set_submodule_replaces_in_place():
    model, _ = tiny_model("opt")
    new = torch.nn.Linear(64, 64, bias=False)
    set_submodule(model, "model.decoder.layers.0.self_attn.q_proj", new)
    assert model.model.decoder.layers[0].self_attn.q_proj is new


def test_is_skipped_matches_name_fragments_and_ignores_empty_ones():
    from hf_ext.common.arch import is_skipped

    assert is_skipped("model.layers.0.mlp.down_proj", ["down_proj"])
    assert not is_skipped("model.layers.0.mlp.up_proj", ["down_proj", ""])
    assert not is_skipped("model.layers.0.mlp.up_proj", None)
