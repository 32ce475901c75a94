"""Structured pruning on tiny OPT / Llama (grouped-query) / Gemma 3: exact surgery, shapes, save/reload, generate."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM

from hf_ext.common.arch import block_linears, get_arch, get_blocks
from hf_ext.common.models import tiny_model
from hf_ext.structured import StructuredPruningConfig, prune_structured
from hf_ext.structured.pruner import compute_scores, plan_for, select_groups, selection_gates
from hf_ext.structured.surgery import count_prunable, gated

FAMILIES = ("opt", "llama", "gemma")
def _cfg(calib, **kw):
    base = dict(ratio=0.35, criterion="mini_llm", calibration=calib, n_samples=4, seqlen=32, spsa_queries=2)
    return StructuredPruningConfig(**{**base, **kw})


def _ids():
    return torch.randint(3, 300, (2, 24), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("criterion", ["mini_llm", "taylor"])
def test_pruned_equals_dense_with_removed_groups_zeroed(family, criterion, calib):
    model, tok = tiny_model(family)
    dense = copy.deepcopy(model)
    cfg = _cfg(calib, criterion=criterion)
    layouts, gran, plan = plan_for(dense, cfg)
    scores = compute_scores(dense, tok, cfg, layouts, gran)
    gates = selection_gates(select_groups(scores, layouts, gran, plan), layouts, gran)
    assert any((g[0] == 0).any() for g in gates) and all((g[1] == 0).any() for g in gates)
    ids = _ids()
    with torch.no_grad(), gated(dense, gates, gran):
        expected = dense(input_ids=ids).logits
    prune_structured(model, tok, cfg, scores=scores)
    assert model.config.quantization_config is cfg and cfg.layer_shapes is not None
    with torch.no_grad():
        got = model(input_ids=ids).logits
        full = dense(input_ids=ids).logits
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-4)
    assert (got - full).abs().max() > 1e-3  # the pruning did change the function


@pytest.mark.parametrize("family,heads,kv", [("opt", 3, 3), ("llama", 2, 1), ("gemma", 3, 1)])
@pytest.mark.parametrize("ratio", [0.2, 0.35])
def test_shapes_shrink_and_ratio_is_met(family, heads, kv, ratio, calib):
    model, tok = tiny_model(family)
    before = count_prunable(model)
    prune_structured(model, tok, _cfg(calib, ratio=ratio, criterion="activation"))
    cfg = model.config.quantization_config
    achieved = 1 - count_prunable(model) / before
    assert abs(achieved - ratio) < 0.01 and abs(cfg.achieved_ratio - achieved) < 1e-5
    arch, hd = get_arch(model), 16
    for block, shape in zip(get_blocks(model), cfg.layer_shapes):
        q, k = block.get_submodule(arch.q), block.get_submodule(arch.k)
        assert type(q) is nn.Linear and q.out_features == shape["num_heads"] * hd
        assert k.out_features == shape["num_kv_heads"] * hd
        assert block.get_submodule(arch.o).in_features == shape["num_heads"] * hd
        for p in arch.up:
            assert block.get_submodule(p).out_features == shape["intermediate_size"]
        assert block.get_submodule(arch.down).in_features == shape["intermediate_size"] < 128
        if ratio == 0.35:
            assert (shape["num_heads"], shape["num_kv_heads"]) == (heads, kv)


def test_protected_blocks_keep_their_shapes(calib):
    model, tok = tiny_model("llama")
    prune_structured(model, tok, _cfg(calib, ratio=0.2, criterion="magnitude", protect_first=1, protect_last=1))
    shapes = model.config.quantization_config.layer_shapes
    assert shapes[0] == shapes[2] == {"num_heads": 4, "num_kv_heads": 2, "intermediate_size": 128}
    assert shapes[1]["intermediate_size"] < 128 - 38  # the middle block takes the whole 20 %


@pytest.fixture(scope="module")
def saved(tmp_path_factory, calib):
    """Prune each family, save it, and reload all of them in ONE fresh process (only ``import hf_ext``)."""
    root = tmp_path_factory.mktemp("pruned")
    ids = _ids()
    torch.save(ids, root / "ids.pt")
    expected = {}
    for family in FAMILIES:
        model, tok = tiny_model(family)
        prune_structured(model, tok, _cfg(calib))
        with torch.no_grad():
            logits = model(input_ids=ids).logits
        gen = model.generate(ids[:1, :8], max_new_tokens=6, do_sample=False)
        model.save_pretrained(root / family)
        tok.save_pretrained(root / family)
        expected[family] = (logits, gen, model.config.quantization_config.layer_shapes)
    code = (
        "import json, sys, torch, hf_ext\n"
        "from transformers import AutoModelForCausalLM\n"
        f"root = {str(root)!r}; ids = torch.load(root + '/ids.pt'); out = {{}}\n"
        f"for fam in {FAMILIES!r}:\n"
        "    m = AutoModelForCausalLM.from_pretrained(root + '/' + fam)\n"
        "    with torch.no_grad():\n"
        "        torch.save(m(input_ids=ids).logits, root + f'/{fam}.logits.pt')\n"
        "    out[fam] = m.generate(ids[:1, :8], max_new_tokens=6, do_sample=False).tolist()\n"
        "print(json.dumps(out))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return root, expected, json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("family", FAMILIES)
def test_reload_in_fresh_process_gives_identical_outputs(saved, family):
    root, expected, generated = saved
    logits, gen, _ = expected[family]
    assert torch.equal(torch.load(root / f"{family}.logits.pt"), logits)
    assert generated[family] == gen.tolist()


@pytest.mark.parametrize("family", FAMILIES)
def test_reload_in_process_keeps_shapes_config_and_generates(saved, family):
    root, expected, _ = saved
    model = AutoModelForCausalLM.from_pretrained(root / family)
    cfg = model.config.quantization_config
    assert type(cfg).__name__ == "StructuredPruningConfig" and cfg.layer_shapes == expected[family][2]
    q = get_blocks(model)[0].get_submodule(get_arch(model).q)
    assert q.out_features == cfg.layer_shapes[0]["num_heads"] * 16
    out = model.generate(_ids()[:1, :8], max_new_tokens=4, do_sample=False)
    assert out.shape[1] == 12


def test_from_pretrained_with_config_prunes_and_round_trips(tmp_path, calib):
    model, tok = tiny_model("llama")
    model.save_pretrained(tmp_path / "dense")
    tok.save_pretrained(tmp_path / "dense")
    cfg = _cfg(calib, ratio=0.25, criterion="activation")
    pruned = AutoModelForCausalLM.from_pretrained(tmp_path / "dense", quantization_config=cfg)
    assert pruned.model.layers[1].mlp.down_proj.in_features < 128
    assert abs(pruned.config.quantization_config.achieved_ratio - 0.25) < 0.01
    pruned.save_pretrained(tmp_path / "pruned")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "pruned")
    ids = _ids()
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=ids).logits, pruned(input_ids=ids).logits, atol=0, rtol=0)


def test_lora_recovery_merges_into_plain_linears_and_lowers_loss(tmp_path, calib):
    model, tok = tiny_model("gemma")
    cfg = _cfg(calib, ratio=0.3, criterion="activation", recovery_steps=8, recovery_samples=4, recovery_lr=3e-3)
    ids = torch.randint(3, 300, (2, 16))
    model.get_input_embeddings().weight.requires_grad_(False)  # a user's frozen parameter stays frozen
    prune_structured(model, tok, cfg)
    rec = model.hf_quantizer.report.extra["recovery"]
    assert len(rec["losses"]) == 8 and sum(rec["losses"][-2:]) < sum(rec["losses"][:2])
    assert not any("lora" in n for n, _ in model.named_modules())
    linears = block_linears(get_blocks(model)[0], get_arch(model))
    assert linears and all(type(m) is nn.Linear for m in linears.values())  # LoRA merged away, not left wrapped
    assert not model.get_input_embeddings().weight.requires_grad
    assert all(m.weight.requires_grad for m in linears.values())
    model.save_pretrained(tmp_path / "rec")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "rec")
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=ids).logits, model(input_ids=ids).logits, atol=0, rtol=0)


def test_taylor_leaves_no_gradients_or_trainable_flags(calib):
    model, tok = tiny_model("opt")
    model.model.decoder.embed_tokens.weight.requires_grad_(False)  # a user's frozen parameter stays frozen
    prune_structured(model, tok, _cfg(calib, criterion="taylor"))
    assert all(p.grad is None for p in model.parameters())
    assert not model.model.decoder.embed_tokens.weight.requires_grad
    assert model.model.decoder.layers[0].fc2.weight.requires_grad


def test_cli_prune_writes_a_reloadable_model(tmp_path, calib):
    from hf_ext.cli import main

    model, tok = tiny_model("opt")
    model.save_pretrained(tmp_path / "dense")
    tok.save_pretrained(tmp_path / "dense")
    rc = main(["prune", str(tmp_path / "dense"), "--out", str(tmp_path / "out"), "--ratio", "0.3", "--criterion",
               "mini_llm", "--calibration", calib, "--n-samples", "2", "--seqlen", "32", "--spsa-queries", "1"])
    assert rc == 0
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert abs(again.config.quantization_config.achieved_ratio - 0.3) < 0.01
    assert again.model.decoder.layers[0].fc1.out_features < 128


@pytest.mark.slow
def test_default_model_prunes_and_reloads(tmp_path):
    from hf_ext.common.models import load_default_model

    model, tok = load_default_model()
    prune_structured(model, tok, StructuredPruningConfig(ratio=0.2, criterion="magnitude"))
    assert abs(model.config.quantization_config.achieved_ratio - 0.2) < 0.01
    model.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path)
    ids = tok("def main():", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=ids).logits, model(input_ids=ids).logits, atol=0, rtol=0)
