"""Any-precision math and layer: seed k-means, upscaling prefix property, bitplanes, the layer, the config."""

from __future__ import annotations

import pytest
import torch

from hf_ext.any_precision import AnyPrecisionConfig, AnyPrecisionLinear, PrecisionNotLoadedError
from hf_ext.any_precision.bitplanes import pack_bitplanes, unpack_bitplanes
from hf_ext.any_precision.seed import weighted_kmeans, weighted_sse
from hf_ext.any_precision.upscale import prefix_codes, upscale
from hf_ext.common.quant import fake_quantize


@pytest.fixture(scope="module")
def weights():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(24, 100, generator=g) * torch.rand(24, 1, generator=g)
    fisher = torch.rand(24, 100, generator=g) ** 4
    return w, fisher


@pytest.fixture(scope="module")
def nested(weights):
    w, fisher = weights
    codes, lut = weighted_kmeans(w, fisher, 3, iterations=30)
    return upscale(w, fisher, codes, lut, max_bits=8)


def test_kmeans_centroids_are_weighted_means_and_beat_rtn(weights):
    w, fisher = weights
    codes, lut = weighted_kmeans(w, fisher, 3)
    assert codes.shape == w.shape and lut.shape == (24, 8)
    assert int(codes.max()) < 8
    f = fisher + 1e-6 * fisher.mean(1, keepdim=True)
    for row in (0, 5, 23):
        for c in codes[row].unique():
            m = codes[row] == c
            expected = (f[row, m] * w[row, m]).sum() / f[row, m].sum()
            assert torch.allclose(lut[row, c], expected, atol=1e-5)
    rtn = fake_quantize(w, 3, group_size=None)
    assert weighted_sse(w, fisher, codes, lut).sum() < (fisher * (w - rtn) ** 2).sum()


def test_kmeans_weights_pull_centroids_toward_sensitive_weights():
    w = torch.tensor([[0.0, 1.0, 2.0, 3.0, 10.0, 11.0]])
    heavy = torch.tensor([[1.0, 1.0, 1.0, 1000.0, 1.0, 1.0]])
    _, lut = weighted_kmeans(w, heavy, 1)
    codes, _ = weighted_kmeans(w, torch.ones_like(w), 1)
    assert torch.isclose(lut.min(), torch.tensor(3.0), atol=0.01)  # cluster {0..3} centred on the heavy weight
    assert codes.tolist() == [[0, 0, 0, 0, 1, 1]]


def test_k_bit_codes_are_prefixes_of_n_bit_codes(weights, nested):
    w, fisher = weights
    codes8, luts = nested
    assert sorted(luts) == [3, 4, 5, 6, 7, 8]
    seed_codes, _ = weighted_kmeans(w, fisher, 3)
    assert torch.equal(prefix_codes(codes8, 8, 3), seed_codes)
    for k in range(3, 8):
        # every child cluster lies inside its parent: the k+1 code's top k bits is the k code
        assert torch.equal(prefix_codes(codes8, 8, k + 1) >> 1, prefix_codes(codes8, 8, k))


def test_upscaling_error_decreases_with_bits(weights, nested):
    w, fisher = weights
    codes8, luts = nested
    errors = [weighted_sse(w, fisher, prefix_codes(codes8, 8, k), luts[k]).sum().item() for k in range(3, 9)]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < errors[0] / 100


def test_bitplanes_round_trip_and_prefix_reads():
    g = torch.Generator().manual_seed(1)
    codes = torch.randint(0, 256, (5, 70), generator=g, dtype=torch.uint8)  # 70 columns: a padded last word
    planes = pack_bitplanes(codes, 8)
    assert planes.shape == (8, 5, 3) and planes.dtype == torch.int32
    assert torch.equal(unpack_bitplanes(planes, 70, 8), codes)
    for k in range(1, 8):
        # only the first k planes are passed: reading k bits never touches the rest
        assert torch.equal(unpack_bitplanes(list(planes[:k]), 70, k), codes >> (8 - k))
    with pytest.raises(ValueError, match="out of range"):
        pack_bitplanes(codes, 7)
    with pytest.raises(ValueError, match="need 4 planes"):
        unpack_bitplanes(list(planes[:3]), 70, 4)


def test_layer_dequantizes_to_the_k_bit_lookup_and_switches(weights, nested):
    w, _ = weights
    codes8, luts = nested
    bias = torch.randn(24)
    layer = AnyPrecisionLinear.from_codes(codes8, luts, 8, bias=bias, lut_dtype=torch.float32)
    x = torch.randn(3, 100)
    for k in range(3, 9):
        expected = luts[k].gather(1, prefix_codes(codes8, 8, k))
        assert torch.equal(layer.dequantize(k), expected)
        layer.set_precision(k)
        assert torch.allclose(layer(x), x @ expected.T + bias, atol=1e-5)
    assert layer.nbytes(3) < layer.nbytes(8) < layer.stored_nbytes()
    with pytest.raises(PrecisionNotLoadedError, match=r"Precision 2 is not loaded; this model holds \[3, 4"):
        layer.set_precision(2)


def test_cache_policies(nested):
    codes8, luts = nested
    x = torch.randn(2, 100)
    outs = {}
    for policy in ("none", "active", "all"):
        layer = AnyPrecisionLinear.from_codes(codes8, luts, 8, cache=policy)
        for k in (3, 8, 4):
            layer.set_precision(k)
            outs.setdefault(k, []).append(layer(x))
        n_cached = len(layer._cache)
        assert n_cached == {"none": 0, "active": 1, "all": 3}[policy]
    for ys in outs.values():
        assert all(torch.equal(ys[0], y) for y in ys[1:])


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        (dict(seed_bits=5, max_bits=4), r"seed_bits \(5\) must not exceed max_bits \(4\)"),
        (dict(seed_bits=1), "seed_bits must be an integer in 2..8, got 1"),
        (dict(max_bits=9), "max_bits must be an integer in 2..8, got 9"),
        (dict(precisions=[3, 12]), r"precisions must be .* got \[3, 12\]"),
        (dict(cache_dequantized="sometimes"), "cache_dequantized must be one of"),
        (dict(n_samples=0), "n_samples must be an integer >= 1"),
        (dict(seqlen=2.5), "seqlen must be an integer >= 1"),
    ],
)
def test_config_rejects_bad_values(fields, match):
    with pytest.raises(ValueError, match=match):
        AnyPrecisionConfig(**fields)


def test_config_round_trip_and_loaded_precisions():
    cfg = AnyPrecisionConfig(seed_bits=2, max_bits=5, n_samples=4, precisions=[4, 2])
    d = cfg.to_dict()
    assert d["quant_method"] == "hf_ext_any_precision" and "tokenizer" not in d
    back = AnyPrecisionConfig.from_dict(d)
    assert back == cfg and back.loaded_precisions == [2, 4]
    assert AnyPrecisionConfig(seed_bits=3, max_bits=4).stored_precisions == [3, 4]
    with pytest.raises(ValueError, match=r"Precisions \[6\] are not stored .* holds \[2, 3, 4, 5\]"):
        _ = AnyPrecisionConfig(seed_bits=2, max_bits=5, precisions=[6]).loaded_precisions


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_triton_kernel_matches_cpu_path(nested):
    pytest.importorskip("triton")
    codes8, luts = nested
    layer = AnyPrecisionLinear.from_codes(codes8, luts, 8, lut_dtype=torch.float16, dtype=torch.float16)
    x = torch.randn(1, 100)
    refs = {k: x @ layer.dequantize(k, torch.float32).T for k in (3, 4, 8)}
    layer.cuda()
    for k, ref in refs.items():
        layer.set_precision(k)
        y = layer(x.cuda().half()).float().cpu()  # one token: the fused bitplane GEMV
        assert torch.allclose(y, ref, atol=2e-2, rtol=2e-2)
