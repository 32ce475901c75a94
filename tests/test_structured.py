"""Structured pruning: config, allocation and SPSA math, bad input (pure or tiny-model, fast)."""

from __future__ import annotations

import pytest
import torch

from hf_ext.common.arch import UnsupportedArchitectureError
from hf_ext.common.models import tiny_model
from hf_ext.structured import StructuredPruningConfig, prune_structured
from hf_ext.structured.importance import (
    BlockBudget,
    BlockScores,
    aggregate_heads,
    allocate,
    fms_scores,
    select_channels,
    select_heads,
)
from hf_ext.structured.zeroth_order import DirectionStream, auto_queries, spsa_estimate


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.1, 1.5])
def test_config_rejects_ratio_outside_open_interval(ratio):
    with pytest.raises(ValueError, match=r"ratio must be in \(0, 1\)"):
        StructuredPruningConfig(ratio=ratio)


@pytest.mark.parametrize("field,value,match", [
    ("criterion", "random", "criterion"), ("head_granularity", "x", "granul"), ("n_samples", 0, "n_samples"),
    ("spsa_eps", 0.0, "spsa_eps"), ("protect_first", -1, "protect_first"),
    ("recovery_lr", float("inf"), "recovery_lr"), ("recovery_lr", float("nan"), "recovery_lr"),
    ("recovery_lr", 0.0, "recovery_lr"), ("recovery_lr", "1e-4", "recovery_lr"),
    ("spsa_eps", float("inf"), "spsa_eps"), ("spsa_scope", "layer", "spsa_scope"), ("spsa_queries", 0, "spsa_queries"),
    ("spsa_directions", "gauss", "spsa_directions"), ("spsa_per_window", 1, "spsa_per_window")])
def test_config_rejects_bad_fields(field, value, match):
    with pytest.raises(ValueError, match=match):
        StructuredPruningConfig(**{field: value})


def test_config_round_trip_keeps_layer_shapes():
    shapes = [{"num_heads": 3, "num_kv_heads": 1, "intermediate_size": 70}]
    cfg = StructuredPruningConfig(ratio=0.3, criterion="taylor", layer_shapes=shapes, tokenizer="tok")
    d = cfg.to_dict()
    assert d["quant_method"] == "hf_ext_structured" and "tokenizer" not in d
    back = StructuredPruningConfig.from_dict(d)
    assert back.layer_shapes == shapes and back.ratio == 0.3 and back.criterion == "taylor"


def _budgets(n=6, protected=()):
    # Gemma-3-270M-like block: 4 query heads of 256 sharing 1 kv head, hidden 640, 2048 channels (gate+up+down)
    return [BlockBudget(4, 327_680, 2048, 1920, 5_570_560, i in protected) for i in range(n)]


@pytest.mark.parametrize("ratio", [0.05, 0.2, 0.35, 0.5, 0.7])
def test_allocate_hits_ratio_within_one_point(ratio):
    plan = allocate(_budgets(), ratio)
    assert abs(plan.achieved_ratio - ratio) < 0.01
    assert all(h < 4 for h in plan.head_steps) and all(c < 2048 for c in plan.channels)


def test_allocate_protected_blocks_untouched_and_others_take_more():
    plan = allocate(_budgets(6, protected=(0, 5)), 0.2)
    assert plan.head_steps[0] == plan.channels[0] == plan.head_steps[5] == plan.channels[5] == 0
    assert abs(plan.achieved_ratio - 0.2) < 0.01
    assert plan.channels[2] > allocate(_budgets(6), 0.2).channels[2]


def test_allocate_errors():
    with pytest.raises(ValueError, match="every attention head"):
        allocate([BlockBudget(2, 1000, 100, 10, 3000)], 0.9)
    with pytest.raises(ValueError, match="Every block is protected"):
        allocate(_budgets(2, protected=(0, 1)), 0.2)
    with pytest.raises(ValueError, match="cannot be reached"):
        allocate(_budgets(4, protected=(0, 1, 2)), 0.3)


def test_select_heads_query_granularity_removes_same_count_per_group():
    scores = torch.tensor([5.0, 1.0, 3.0, 0.5, 2.0, 9.0])  # 2 kv groups of 3 query heads
    heads, kv = select_heads(scores, 1, 2, 3, "query")
    assert heads.tolist() == [0, 2, 4, 5] and kv.tolist() == [0, 1]
    heads, kv = select_heads(torch.tensor([1.0, 0.2]), 1, 2, 2, "kv_group")
    assert heads.tolist() == [0, 1] and kv.tolist() == [0]
    assert select_channels(torch.tensor([3.0, 1.0, 2.0, 0.0]), 2).tolist() == [0, 2]


def test_aggregate_and_fms():
    q = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert aggregate_heads(q, torch.tensor([10.0, 20.0]), "kv_group").tolist() == [13.0, 27.0]
    act = BlockScores(torch.tensor([1.0, 1.0]), torch.tensor([2.0, 1.0]))
    grad = BlockScores(torch.tensor([0.0, 2.0]), torch.tensor([1.0, -3.0]))
    fused = fms_scores(act, grad, 1.0)
    assert fused.heads.tolist() == [1.0, 3.0]  # the gradient reorders groups of equal activation
    assert fused.channels.tolist() == [3.0, 2.5]
    assert torch.equal(fms_scores(act, grad, 0.0).channels, act.channels)
    # a gradient below the noise threshold leaves the activation ranking alone
    assert torch.equal(fms_scores(act, grad, 1.0, noise=5.0).channels, act.channels)
    assert fms_scores(act, grad, 1.0, noise=2.0).channels.tolist() == [2.0, 1.5]


def test_orthogonal_directions_are_orthogonal_runs_of_norm_sqrt_d():
    z = DirectionStream(6, "orthogonal", torch.Generator().manual_seed(0)).take(14)
    assert z.shape == (14, 6)
    torch.testing.assert_close(z[:6] @ z[:6].T, 6 * torch.eye(6, dtype=torch.float64))
    torch.testing.assert_close(z[6:12] @ z[6:12].T, 6 * torch.eye(6, dtype=torch.float64))
    assert not torch.allclose(z[:6], z[6:12])  # a fresh rotation per run
    r = DirectionStream(5, "rademacher", torch.Generator().manual_seed(0)).take(3)
    assert set(r.abs().flatten().tolist()) == {1.0}
    big = DirectionStream(20_000, "orthogonal", torch.Generator().manual_seed(0))  # a whole model's gates
    assert big.kind == "rademacher" and big.take(3).shape == (3, 20_000)  # no 20k x 20k rotation
    assert auto_queries(130, 8, True) == 17 and auto_queries(3, 8, True) == 4 and auto_queries(10, 8, False) == 10


def _quadratic(a, per_window_noise=None):
    """Per-window losses of ``L_w(theta) = (a + n_w) . theta + 0.5 |theta - 1|^2``: gradient at 1 is a + n_w."""
    calls = []

    def loss(gates):
        calls.append(1)
        n = 4
        theta = torch.ones(n, len(a)) if gates is None else gates.double()
        slope = a + (per_window_noise if per_window_noise is not None else 0)
        return (slope * theta).sum(1) + 0.5 * ((theta - 1) ** 2).sum(1)

    return loss, calls


def test_spsa_estimate_is_exact_after_one_orthogonal_run_and_counts_passes():
    a = torch.tensor([3.0, -1.0, 0.5, 2.0, -2.5, 1.0, 0.0, 4.0], dtype=torch.float64)
    loss, calls = _quadratic(a)
    # 4 windows, 8 gates: two queries span the space, so the estimate is exact (up to the finite difference)
    est = spsa_estimate(loss, 8, 4, 1e-3, 2, torch.Generator().manual_seed(0))
    assert len(calls) == 4 and est.passes == 4 and est.measurements == 8
    torch.testing.assert_close(est.grad.double(), a, atol=1e-3, rtol=1e-3)
    # independent (Rademacher) directions at the same budget are much worse: what orthogonal runs buy
    rad = spsa_estimate(loss, 8, 4, 1e-3, 2, torch.Generator().manual_seed(0), directions="rademacher")
    assert (rad.grad.double() - a).norm() > 0.3 * a.norm()
    # one-sided differences: one pass per query plus the unperturbed one
    loss, calls = _quadratic(a)
    one = spsa_estimate(loss, 8, 4, 1e-4, 2, torch.Generator().manual_seed(0), antithetic=False)
    assert len(calls) == 3 and one.passes == 3
    torch.testing.assert_close(one.grad.double(), a, atol=1e-2, rtol=1e-2)


def test_spsa_estimate_per_window_averages_window_gradients_and_reports_stderr():
    a = torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64)
    noise = torch.randn(4, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    loss, _ = _quadratic(a, noise)
    est = spsa_estimate(loss, 3, 4, 1e-3, 600, torch.Generator().manual_seed(0))
    target = a + noise.mean(0)  # the gradient of the mean loss over windows
    assert (est.grad.double() - target).abs().max() < 4 * est.stderr.max()
    assert 0 < est.stderr.max() < 0.2
    shared = spsa_estimate(loss, 3, 4, 1e-3, 3, torch.Generator().manual_seed(0), per_window=False)
    torch.testing.assert_close(shared.grad.double(), target, atol=1e-3, rtol=1e-3)  # one run of shared directions


def test_fms_accepts_per_gate_noise():
    act = BlockScores(torch.tensor([1.0, 1.0]), torch.tensor([2.0, 1.0]))
    grad = BlockScores(torch.tensor([0.0, 2.0]), torch.tensor([1.0, -3.0]))
    noise = BlockScores(torch.tensor([0.0, 0.0]), torch.tensor([0.0, 5.0]))
    assert fms_scores(act, grad, 1.0, noise).channels.tolist() == [3.0, 1.0]


def test_ratio_too_small_to_remove_one_group_raises():
    model, tok = tiny_model("llama")
    with pytest.raises(ValueError, match="removes no head or channel"):
        prune_structured(model, tok, StructuredPruningConfig(ratio=0.001, criterion="magnitude"))
    assert model.model.layers[0].mlp.down_proj.in_features == 128


def test_ratio_removing_every_head_of_a_layer_raises_before_any_work():
    model, tok = tiny_model("llama")  # 2 key/value groups per block
    with pytest.raises(ValueError, match="every attention head"):
        prune_structured(model, tok, StructuredPruningConfig(ratio=0.9, criterion="magnitude"))
    assert model.model.layers[0].self_attn.q_proj.out_features == 64


def test_unsupported_architecture_raises():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50))
    with pytest.raises(UnsupportedArchitectureError, match="not supported"):
        prune_structured(model, None, StructuredPruningConfig(ratio=0.2, criterion="magnitude"))


def test_query_granularity_on_multi_head_attention_raises():
    model, tok = tiny_model("opt")
    with pytest.raises(ValueError, match="grouped-query"):
        prune_structured(model, tok, StructuredPruningConfig(ratio=0.2, criterion="magnitude",
                                                             head_granularity="query"))


def test_calibrating_criterion_without_tokenizer_raises():
    model, _ = tiny_model("llama")
    with pytest.raises(ValueError, match="tokenizer"):
        prune_structured(model, None, StructuredPruningConfig(ratio=0.2, criterion="activation"))


def test_pruning_an_already_pruned_model_raises():
    model, tok = tiny_model("llama")
    prune_structured(model, tok, StructuredPruningConfig(ratio=0.2, criterion="magnitude"))
    with pytest.raises(ValueError, match="already carries"):
        prune_structured(model, tok, StructuredPruningConfig(ratio=0.2, criterion="magnitude"))
