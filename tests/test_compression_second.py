"""Compression second pass: joint sparse + quant on synthetic layers, fixed-mask refit, MRP (measured, deterministic),
reloads that fail loudly, validation messages, packed-only resident memory."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

import hf_ext  # noqa: F401  (registers the quantization method)
from hf_ext.common.arch import named_block_linears
from hf_ext.common.data import calibration_batches
from hf_ext.common.models import tiny_model
from hf_ext.compression import CompressedLinear, CompressionConfig, compress, set_resident
from hf_ext.compression.alps import alps_prune
from hf_ext.compression.layer import quantize_kept
from hf_ext.compression.metrics import check_nm, importance, unstructured_mask
from hf_ext.compression.mrp_measured import MeasuredBlock
from hf_ext.compression.pipeline import allocation_from_stats, collect_allocation_stats
from hf_ext.compression.sparsegpt import obs_quantize, reconstruction_error, refit_on_mask, sparsegpt_prune

SMALL = dict(n_samples=2, seqlen=32, group_size=32)


def _synthetic(out=32, inp=256, n=768, seed=0):
    """Random X with correlated columns (a low-rank part plus noise), H = 2/n X^T X."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 12, generator=g) @ torch.randn(12, inp, generator=g) + 0.3 * torch.randn(n, inp, generator=g)
    return torch.randn(out, inp, generator=g), 2.0 / n * x.T @ x


# ------------------------------------------------------------------------------------------ joint sparse + quant


@pytest.mark.parametrize("sparsity", [0.5, 0.7])
@pytest.mark.parametrize("group_size", [32, 128, None])
def test_joint_quantization_beats_prune_then_round(sparsity, group_size):
    w, h = _synthetic()
    pruned, keep, _, _ = sparsegpt_prune(w, h, sparsity)
    for bits in (4, 3):
        joint, jkeep, scale, zero = sparsegpt_prune(w, h, sparsity, bits=bits, group_size=group_size)
        rounded, _, _ = quantize_kept(pruned, keep, bits, group_size)
        assert torch.equal(jkeep, keep)  # the mask does not depend on quantization
        assert torch.all(joint[~keep] == 0)
        assert reconstruction_error(w, joint, h) <= reconstruction_error(w, rounded, h)
        g = w.shape[1] if group_size is None else group_size
        codes = joint / scale.repeat_interleave(g, 1) + zero.repeat_interleave(g, 1)
        assert torch.allclose(codes[keep], codes[keep].round(), atol=1e-3)  # kept weights lie on the saved grid


def test_mask_independent_of_group_size():
    w, h = _synthetic()
    _, ref, _, _ = sparsegpt_prune(w, h, 0.7)
    for g in (None, 32, 128, 256):
        assert torch.equal(sparsegpt_prune(w, h, 0.7, bits=4, group_size=g)[1], ref), g


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 8])
def test_fast_unpack_matches_the_common_layout(bits):
    from hf_ext.common.quant import pack_bits, unpack_bits
    from hf_ext.compression.layer import unpack_fast

    codes = torch.randint(0, 2**bits, (1001,), generator=torch.Generator().manual_seed(bits))
    packed = pack_bits(codes, bits)
    assert torch.equal(unpack_fast(packed, bits, 1001), unpack_bits(packed, bits, 1001))
    assert torch.equal(unpack_fast(packed, bits, 1001).long(), codes)


# ------------------------------------------------------------------------------------------------------ refit


@pytest.mark.parametrize("bits", [None, 4])
def test_refit_lowers_reconstruction_error_for_every_metric(bits):
    w, h = _synthetic()
    # SparseGPT: the same mask with and without refit
    plain = sparsegpt_prune(w, h, 0.7, bits=bits, group_size=32)
    refit = sparsegpt_prune(w, h, 0.7, bits=bits, group_size=32, refit_iters=10)
    assert torch.equal(plain[1], refit[1])
    assert reconstruction_error(w, refit[0], h) < 0.9 * reconstruction_error(w, plain[0], h)
    # Wanda / magnitude masks: the masked weights (then rounded) vs refit (then OBS-quantized) on the same mask
    for scores in (w.abs(), importance(w, "wanda", h.diagonal().sqrt())):
        keep = unstructured_mask(scores, 0.7)
        base = w * keep
        new = refit_on_mask(w, h, keep, 10)
        assert torch.all(new[~keep] == 0)
        if bits is not None:
            base, _, _ = quantize_kept(base, keep, bits, 32)
            new = obs_quantize(new, h, keep, bits, 32)[0]
        assert reconstruction_error(w, new, h) < 0.9 * reconstruction_error(w, base, h)


def test_refit_converges_to_the_per_row_closed_form():
    w, h = _synthetic(out=4, inp=64)
    keep = unstructured_mask(w.abs(), 0.5)
    new = refit_on_mask(w, h, keep, 200, dampening=0.0)
    for r in range(4):
        s = keep[r]
        exact = torch.linalg.solve(h[s][:, s], (w[r] @ h)[s])  # w_S = H_SS^-1 (H w0)_S
        assert torch.allclose(new[r, s], exact, rtol=1e-3, atol=1e-3)


def test_alps_beats_sparsegpt_on_the_layer_problem():
    w, h = _synthetic()
    for sparsity in (0.7, 0.9):
        new, keep = alps_prune(w, h, sparsity)
        assert int((~keep).sum()) == round(sparsity * w.numel())  # one budget for the whole layer
        assert torch.all(new[~keep] == 0)
        sgpt = sparsegpt_prune(w, h, sparsity)[0]
        assert reconstruction_error(w, new, h) < reconstruction_error(w, sgpt, h)
    new, keep = alps_prune(w, h, 0.5, nm=(2, 4))
    assert check_nm(keep, 2, 4) and int(keep.sum()) == w.numel() // 2


def test_alps_end_to_end_with_quantization(calib):
    model, tok = tiny_model("gemma")
    compress(model, tok, CompressionConfig(sparsity=0.6, metric="alps", bits=4, calibration=calib, **SMALL))
    layers = list(named_block_linears(model).values())
    assert all(isinstance(m, CompressedLinear) and m.bits == 4 for m in layers)
    assert model.config.quantization_config.achieved_sparsity == pytest.approx(0.6, abs=0.005)


# ------------------------------------------------------------------------------------------------------------ MRP


def _mrp_alloc(model, tok, calib, mode, metrics=("wanda",), seed=0, metric="wanda"):
    cfg = CompressionConfig(sparsity=0.6, allocation="mrp", metric=metric, mrp_mode=mode, calibration=calib,
                            seed=seed, mrp_step=0.05, mrp_sample_size=512, **SMALL)
    ids = calibration_batches(tok, calib, cfg.n_samples, cfg.seqlen, cfg.seed)
    stats = collect_allocation_stats(model, ids, cfg, owl=False, mrp_metrics=metrics, mrp_modes=(mode,))
    return allocation_from_stats(stats, cfg)[0]


@pytest.mark.parametrize("mode", ["simulated", "measured"])
def test_mrp_allocation_is_deterministic(mode, calib):
    model, tok = tiny_model("llama", num_hidden_layers=3)
    a = _mrp_alloc(model, tok, calib, mode)
    assert a == _mrp_alloc(model, tok, calib, mode)  # same seed -> same per-block sparsities
    # what else the pass collects does not change an allocation
    assert a == _mrp_alloc(model, tok, calib, mode, metrics=("magnitude", "wanda"))
    assert sum(a) / len(a) == pytest.approx(0.6, abs=1e-6)


def test_measured_mrp_measures_the_pruned_block():
    w, h = _synthetic(out=32, inp=64)
    block = MeasuredBlock([w], [h.diagonal().sqrt()], [h], "sparsegpt")
    ratios = [block.non_outlier_ratio(s, 3.0) for s in (0.0, 0.3, 0.6, 0.9)]
    assert ratios == sorted(ratios, reverse=True) and ratios[-1] <= 0.1 + 1e-9  # pruning removes redundancy
    # the measurement sees SparseGPT's updated weights: pruning with the update gives other scores than masking
    pruned = sparsegpt_prune(w, h, 0.6)[0]
    assert not torch.equal(pruned[pruned != 0], w[pruned != 0])


def test_measured_mrp_end_to_end(calib):
    model, tok = tiny_model("gemma")
    compress(model, tok, CompressionConfig(sparsity=0.6, allocation="mrp", metric="sparsegpt", mrp_step=0.05,
                                           calibration=calib, **SMALL))
    assert "MRP measured" in model.compression_report.to_markdown()
    assert model.config.quantization_config.achieved_sparsity == pytest.approx(0.6, abs=0.005)


# ------------------------------------------------------------------------------------------------ loud reloads


@pytest.fixture(scope="module")
def saved(tmp_path_factory, calib):
    model, tok = tiny_model("llama")
    compress(model, tok, CompressionConfig(sparsity=0.5, metric="wanda", bits=4, calibration=calib, **SMALL))
    folder = tmp_path_factory.mktemp("saved")
    model.save_pretrained(folder)
    return folder


def _damaged(saved, tmp_path, edit):
    import shutil

    out = tmp_path / "damaged"
    shutil.copytree(saved, out)
    tensors = load_file(out / "model.safetensors")
    edit(tensors)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


LAYER = "model.layers.1.mlp.up_proj"


def test_intact_checkpoint_reloads(saved):
    model = AutoModelForCausalLM.from_pretrained(saved)
    cfg = model.config.quantization_config
    assert len(cfg.checksums) == len(cfg.compressed_layers) and set(cfg.checksums[LAYER]) == {
        "mask", "qweight", "scales", "zeros"}


def test_missing_buffer_is_refused(saved, tmp_path):
    folder = _damaged(saved, tmp_path, lambda t: t.pop(f"{LAYER}.scales"))
    with pytest.raises(ValueError, match=f"lacks {LAYER}.scales"):
        AutoModelForCausalLM.from_pretrained(folder)


def test_mask_popcount_mismatch_is_refused(saved, tmp_path):
    def flip_bit(t):
        t[f"{LAYER}.mask"][3] ^= 1

    with pytest.raises(ValueError, match=f"mask of {LAYER} keeps .* the config records"):
        AutoModelForCausalLM.from_pretrained(_damaged(saved, tmp_path, flip_bit))


def test_flipped_byte_is_refused(saved, tmp_path):
    def flip_byte(t):
        t[f"{LAYER}.qweight"][5] ^= 0xFF

    with pytest.raises(ValueError, match=f"{LAYER}.qweight does not match its recorded digest"):
        AutoModelForCausalLM.from_pretrained(_damaged(saved, tmp_path, flip_byte))


# ------------------------------------------------------------------------------------------------- validation


def test_high_uniform_sparsity_is_not_refused_for_mrp_reasons():
    CompressionConfig(sparsity=0.97, allocation="uniform")
    with pytest.raises(ValueError, match="mrp_max_sparsity"):
        CompressionConfig(sparsity=0.97, allocation="mrp")


@pytest.mark.parametrize("name", ["sparsity", "owl_m", "owl_lambda", "mrp_step", "mrp_tolerance", "mrp_max_sparsity",
                                  "hessian_spread", "dampening"])
def test_nan_is_refused_by_name(name):
    with pytest.raises(ValueError, match=f"^{name} must be a number, got NaN"):
        CompressionConfig(**{name: math.nan})


@pytest.mark.parametrize("value", [["a", 0.5], [0.5, math.nan], "0.5"])
def test_non_numeric_block_sparsities_are_refused(value):
    with pytest.raises(ValueError, match="block_sparsities must be a list of numbers"):
        CompressionConfig(block_sparsities=value)


def test_model_dependent_validation(calib):
    model, tok = tiny_model("llama")
    with pytest.raises(ValueError, match=r"seqlen 512 is above the model's max_position_embeddings \(256\)"):
        compress(model, tok, CompressionConfig(calibration=calib, n_samples=2, seqlen=512))
    with pytest.raises(ValueError, match="sparsity=0.001 prunes no weight.*Hessian allocation has nothing"):
        compress(model, tok, CompressionConfig(sparsity=0.001, allocation="hessian", calibration=calib, **SMALL))
    assert not any(isinstance(m, CompressedLinear) for m in model.modules())


# --------------------------------------------------------------------------------------------- resident memory


def test_packed_resident_mode_is_smaller_in_memory_with_identical_outputs(calib, tmp_path):
    ids = torch.tensor([[1, 40, 41, 42, 43, 44, 45, 46]])
    outs, sizes = {}, {}
    for mode in ("dense", "packed"):
        model, tok = tiny_model("opt")
        compress(model, tok, CompressionConfig(sparsity=0.7, metric="wanda", bits=4, resident=mode, calibration=calib,
                                               **SMALL))
        layers = [m for m in named_block_linears(model).values()]
        assert all(isinstance(m, CompressedLinear) and m.resident == mode for m in layers)
        with torch.no_grad():
            outs[mode] = model(ids).logits
        sizes[mode] = sum(m.resident_bytes() for m in layers)
        dense_fp16 = sum(2 * m.in_features * m.out_features for m in layers)
        assert model.compression_report.resident_bytes == sizes[mode]
        if mode == "packed":
            assert sizes[mode] < dense_fp16 / 3
            model.save_pretrained(tmp_path / "packed")
    assert sizes["dense"] > dense_fp16  # the cache: smaller on disk only
    assert torch.equal(outs["dense"], outs["packed"])
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "packed")
    assert all(m.resident == "packed" for m in named_block_linears(reloaded).values())
    assert torch.equal(reloaded(ids).logits, outs["packed"])
    set_resident(reloaded, "dense")
    assert torch.equal(reloaded(ids).logits, outs["packed"])
    assert "on disk only" in (tmp_path / "packed" / "README.md").read_text()
    assert json.loads((tmp_path / "packed" / "config.json").read_text())["quantization_config"]["resident"] == "packed"
