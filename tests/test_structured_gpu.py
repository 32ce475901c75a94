"""Structured pruning with the model on CUDA (skipped without a GPU): exact surgery, reload, generate."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM

import hf_ext.structured.pruner as pruner
from hf_ext.common.models import tiny_model
from hf_ext.structured import StructuredPruningConfig, prune_structured
from hf_ext.structured.surgery import gated

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.fixture(autouse=True)
def random_calibration(monkeypatch):
    # token ids instead of text: the check is about devices, and GPU images may lack `datasets`
    monkeypatch.setattr(pruner, "calibration_batches", lambda tok, src, n, seqlen, seed: torch.randint(
        3, 300, (n, seqlen), generator=torch.Generator().manual_seed(seed)))


@pytest.mark.parametrize("family", ["opt", "llama", "gemma"])
@pytest.mark.parametrize("criterion", ["mini_llm", "taylor", "activation"])
def test_prune_on_cuda_is_exact_and_reloads(family, criterion, tmp_path):
    model, tok = tiny_model(family)
    model.to("cuda")
    dense = copy.deepcopy(model)
    cfg = StructuredPruningConfig(ratio=0.35, criterion=criterion, n_samples=4, seqlen=32, spsa_queries=4)
    layouts, gran, plan = pruner.plan_for(dense, cfg)
    scores = pruner.compute_scores(dense, tok, cfg, layouts, gran)
    gates = pruner.selection_gates(pruner.select_groups(scores, layouts, gran, plan), layouts, gran)
    ids = torch.randint(3, 300, (2, 24), device="cuda")
    with torch.no_grad(), gated(dense, gates, gran):
        expected = dense(input_ids=ids).logits
    prune_structured(model, tok, cfg, scores=scores)
    assert next(model.parameters()).device.type == "cuda"
    with torch.no_grad():
        got = model(input_ids=ids).logits
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-3)
    gen = model.generate(ids[:1, :8], max_new_tokens=5, do_sample=False)
    model.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path, device_map="cuda")
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=ids).logits, got, atol=0, rtol=0)
    assert torch.equal(again.generate(ids[:1, :8], max_new_tokens=5, do_sample=False), gen)
