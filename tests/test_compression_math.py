"""Pure-function tests of compression: configs, masks, allocations, SparseGPT, the packed layer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hf_ext.compression.allocation import (
    hessian_allocation,
    mrp_allocation,
    owl_allocation,
    rebalance,
    sample_block_scores,
    weighted_mean,
)
from hf_ext.compression.config import CompressionConfig
from hf_ext.compression.layer import CompressedLinear, quantize_kept
from hf_ext.compression.metrics import check_nm, importance, nm_mask, unstructured_mask
from hf_ext.compression.sparsegpt import reconstruction_error, sparsegpt_prune

# ------------------------------------------------------------------------------------------------ config


def test_config_round_trip_through_dict():
    cfg = CompressionConfig(sparsity=0.7, allocation="mrp", metric="sparsegpt", bits=4, group_size=64,
                            calibration="some/file.txt", n_samples=8, seqlen=128, mrp_step=0.02)
    cfg.compressed_layers = {"model.layers.0.mlp.up_proj": 123}
    cfg.block_sparsities = [0.6, 0.8]
    data = cfg.to_dict()
    assert data["quant_method"] == "hf_ext_compression"
    assert "tokenizer" not in data  # not serialized
    back = CompressionConfig.from_dict(data)
    assert back == cfg
    assert back.to_dict() == data


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(sparsity=1.0), "sparsity must be in"),
        (dict(sparsity=-0.1), "sparsity must be in"),
        (dict(bits=1), "bits must be"),
        (dict(bits=9), "bits must be"),
        (dict(structure="4:2", sparsity=0.5), "Invalid N:M"),
        (dict(structure="2-4"), "structure must be"),
        (dict(structure="2:4", sparsity=0.7), "means sparsity 0.5"),
        (dict(structure="2:4", allocation="owl"), "needs allocation 'uniform'"),
        (dict(allocation="greedy"), "Unknown allocation 'greedy'"),
        (dict(metric="taylor"), "Unknown metric 'taylor'"),
        (dict(calibration=""), "calibration must name"),
        (dict(n_samples=0), "n_samples must be"),
    ],
)
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CompressionConfig(**kwargs)


# ------------------------------------------------------------------------------------------------ masks


def test_unstructured_mask_prunes_exact_count_and_lowest_scores():
    torch.manual_seed(0)
    scores = torch.rand(7, 30)
    keep = unstructured_mask(scores, 0.55)
    assert int((~keep).sum()) == round(0.55 * 7 * 30)
    for r in range(7):  # every pruned score of a row is below every kept one
        assert scores[r][~keep[r]].max() < scores[r][keep[r]].min()


def test_nm_mask_holds_pattern_and_keeps_largest():
    torch.manual_seed(0)
    scores = torch.rand(5, 16)
    keep = nm_mask(scores, 2, 4)
    assert check_nm(keep, 2, 4)
    assert int(keep.sum()) == 5 * 16 // 2
    groups = scores.reshape(5, 4, 4)
    kept = keep.reshape(5, 4, 4)
    assert torch.equal(groups.where(kept, 0).sum(-1), groups.topk(2, -1).values.sum(-1))
    with pytest.raises(ValueError, match="multiple of 3"):
        nm_mask(torch.rand(2, 16), 1, 3)


def test_wanda_importance_weights_columns_by_activation_norm():
    w = torch.ones(2, 3)
    s = importance(w, "wanda", torch.tensor([1.0, 2.0, 3.0]))
    assert torch.equal(s[0], torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="column norms"):
        importance(w, "wanda")


# ------------------------------------------------------------------------------------------------ allocation


def test_rebalance_hits_target_with_clipping():
    s = rebalance([0.1, 0.9, 0.98], [1.0, 1.0, 2.0], 0.7)
    assert weighted_mean(s, [1.0, 1.0, 2.0]) == pytest.approx(0.7, abs=1e-9)
    assert max(s) <= 0.99


def test_owl_allocation_range_and_order():
    ratios = [0.01, 0.05, 0.02, 0.03]
    s = owl_allocation(ratios, [1.0] * 4, 0.7, 0.08)
    assert weighted_mean(s, [1.0] * 4) == pytest.approx(0.7, abs=1e-9)
    assert max(s) - min(s) == pytest.approx(2 * 0.08)  # OWL's spread is 2 * lambda around the mean
    assert s.index(min(s)) == 1 and s.index(max(s)) == 0  # most outliers -> least sparsity


def test_mrp_prunes_redundant_blocks_more_and_meets_budget():
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    flat = torch.rand(64, 64)  # no outliers: redundant
    heavy = torch.rand(64, 64) ** 6  # heavy tail: many outliers
    blocks = [sample_block_scores([flat], 4096, gen), sample_block_scores([heavy], 4096, gen)]
    s, trace = mrp_allocation(blocks, 0.6, m=3.0, step=0.01)
    assert weighted_mean(s, [1.0, 1.0]) == pytest.approx(0.6, abs=1e-6)
    assert s[0] > s[1] + 0.02
    assert trace.steps > 10
    for b in blocks:  # redundancy falls monotonically as a block is pruned, up to full sparsity
        ratios = [b.non_outlier_ratio(x / 20, 3.0) for x in range(20)]
        assert all(a >= c for a, c in zip(ratios, ratios[1:]))
    # the loop evens redundancy out: the final non-outlier ratios are closer than at the start
    start = [b.non_outlier_ratio(0.0, 3.0) for b in blocks]
    assert abs(trace.final_non_outlier[0] - trace.final_non_outlier[1]) < abs(start[0] - start[1])


def test_hessian_allocation_gives_low_loss_blocks_more_sparsity():
    errors = [1e-3, 2e-3, 1e-1, 5e-1, 1e1, 2e1]
    s, levels = hessian_allocation(errors, [1.0] * 6, 0.7, levels=3, spread=0.1)
    assert weighted_mean(s, [1.0] * 6) == pytest.approx(0.7, abs=1e-9)
    assert s[0] == s[1] > s[2] == s[3] > s[4] == s[5]
    assert levels == [0, 0, 1, 1, 2, 2]
    with pytest.raises(ValueError, match="positive"):
        hessian_allocation([0.0, 1.0], [1.0, 1.0], 0.5)


# ------------------------------------------------------------------------------------------------ SparseGPT


def _layer_and_hessian(out=48, inp=64, n=512):
    torch.manual_seed(0)
    base = torch.randn(n, 8)
    x = base @ torch.randn(8, inp) + 0.3 * torch.randn(n, inp)  # correlated inputs: where OBS pays off
    w = torch.randn(out, inp)
    return w, 2.0 / n * x.T @ x


def test_sparsegpt_beats_magnitude_reconstruction_error():
    w, h = _layer_and_hessian()
    new_w, keep, _, _ = sparsegpt_prune(w, h, 0.6, blocksize=32)
    mag_keep = unstructured_mask(w.abs(), 0.6)
    mag_w = w * mag_keep
    assert abs((~keep).float().mean().item() - 0.6) < 0.01
    assert torch.all(new_w[~keep] == 0)
    assert reconstruction_error(w, new_w, h) < 0.7 * reconstruction_error(w, mag_w, h)


def test_sparsegpt_joint_quantization_and_nm():
    w, h = _layer_and_hessian()
    new_w, keep, scale, zero = sparsegpt_prune(w, h, 0.5, nm=(2, 4), bits=4, group_size=16, blocksize=32)
    assert check_nm(keep, 2, 4) and torch.all(new_w[~keep] == 0)
    assert scale.shape == (48, 4) and zero.shape == (48, 4)
    s, z = scale.repeat_interleave(16, 1), zero.repeat_interleave(16, 1)
    codes = new_w / s + z  # kept weights lie on their group's 4-bit grid
    assert torch.allclose(codes[keep], codes[keep].round(), atol=1e-3)
    assert codes.round().min() >= 0 and codes.round().max() <= 15
    # joint OBS quantization beats pruning then rounding without compensation
    mag_w, _, _ = quantize_kept(w * nm_mask(w.abs(), 2, 4), nm_mask(w.abs(), 2, 4), 4, 16)
    assert reconstruction_error(w, new_w, h) < reconstruction_error(w, mag_w, h)


# ------------------------------------------------------------------------------------------------ layer


@pytest.mark.parametrize("bits", [None, 2, 3, 4, 8])
def test_compressed_linear_packs_and_dequantizes_exactly(bits):
    torch.manual_seed(0)
    lin = nn.Linear(32, 12, bias=True)
    keep = unstructured_mask(lin.weight.abs(), 0.7)
    if bits is None:
        new_w, scale, zero = lin.weight.detach() * keep, None, None
    else:
        new_w, scale, zero = quantize_kept(lin.weight.detach(), keep, bits, 16)
    mod = CompressedLinear.from_linear(lin, keep, new_w, bits, 16, scale, zero)
    dense = mod.dequantize()
    assert torch.equal(mod.keep_mask(), keep)
    assert torch.equal(dense, new_w.float())  # bit for bit, pruned entries +0.0
    assert torch.all(dense[~keep] == 0) and not torch.signbit(dense[~keep]).any()
    x = torch.randn(3, 32)
    assert torch.allclose(mod(x), x @ new_w.T + lin.bias, atol=1e-5)
    # a fresh module loading the state dict rebuilds the same weight
    fresh = CompressedLinear(32, 12, mod.nnz, bits, 16, bias=True)
    fresh.load_state_dict(mod.state_dict())
    fresh.refresh()
    assert "weight" not in mod.state_dict()
    assert torch.equal(fresh.weight, mod.weight)
    if bits is not None:  # the checkpoint really shrinks: codes + mask + scales vs float32
        assert mod.packed_bytes() < 32 * 12 * 4 / 3
