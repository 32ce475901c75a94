"""Any-precision math and layer: seed k-means, upscaling prefix property, bitplanes, the layer, the config."""

from __future__ import annotations

import pytest
import torch

from hf_ext.any_precision import AnyPrecisionConfig, AnyPrecisionLinear, PrecisionNotLoadedError
from hf_ext.any_precision.bitplanes import pack_bitplanes, unpack_bitplanes
from hf_ext.any_precision.layer import release_workspace, workspace_nbytes
from hf_ext.any_precision.seed import (
    SortedRows,
    best_splits,
    fill_empty_clusters,
    kmeans_bounds,
    sensitivity_floor,
    weighted_kmeans,
    weighted_sse,
)
from hf_ext.any_precision.upscale import prefix_codes, split_bounds, upscale
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


def _heavy_tailed(rows: int, cols: int, seed: int = 2):
    """Weights with a few huge squared-gradient sensitivities per row: the case that broke quantile starts."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g)
    fisher = torch.rand(rows, cols, generator=g) ** 8 * torch.exp(3 * torch.randn(rows, cols, generator=g))
    fisher[:, :3] *= 1e6
    return w, fisher


@pytest.mark.parametrize("bits", [3, 6, 8])
def test_all_clusters_used_under_heavy_tailed_weights(bits):
    w, fisher = _heavy_tailed(6, 300)
    codes, lut = weighted_kmeans(w, fisher, bits)
    for row in codes:
        assert row.unique().numel() == 2**bits  # 300 distinct values >= 2**bits: every cluster holds one
    # a row with fewer distinct values than clusters: each value its own cluster, nothing crashes
    few = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0] * 20])
    codes, lut = weighted_kmeans(few, torch.rand(1, 100) ** 8, 3)
    assert codes.unique().numel() == 5
    assert torch.equal(lut.gather(1, codes), few)


def test_empty_clusters_are_reseeded_by_exact_splits():
    w, fisher = _heavy_tailed(4, 64)
    rows = SortedRows.build(w, fisher)
    bounds = torch.tensor([[0, 0, 0, 10, 64]] * 4)  # clusters 0 and 1 empty
    filled = fill_empty_clusters(rows, bounds)
    assert bool((filled[:, 1:] > filled[:, :-1]).all())

    def sse(b):
        return weighted_sse(w, sensitivity_floor(fisher), rows.codes(b), rows.cluster_means(b, torch.zeros(4, 4)))

    assert bool((sse(filled) < sse(bounds)).all())


def test_exact_split_is_the_brute_force_optimum_and_beats_lloyd():
    w, fisher = _heavy_tailed(5, 40)
    rows = SortedRows.build(w, fisher)
    f = rows.f.double()
    bounds = torch.tensor([[0, 40]] * 5)
    pos, drop = best_splits(rows, bounds)

    def cost(x, weights):
        return float((weights * (x - (weights * x).sum() / weights.sum()) ** 2).sum()) if len(x) else 0.0

    for r in range(5):
        x = rows.w[r].double()
        errors = [cost(x[:j], f[r, :j]) + cost(x[j:], f[r, j:]) for j in range(1, 40)]
        best = min(errors)
        j = int(pos[r, 0])
        assert cost(x[:j], f[r, :j]) + cost(x[j:], f[r, j:]) <= best * (1 + 1e-9)
        assert float(drop[r, 0]) == pytest.approx(cost(x, f[r]) - best, rel=1e-6)
    # each level of the upscaling, split both ways from the same parent clusters: exact error <= Lloyd's, per row
    w, fisher = _heavy_tailed(16, 200, seed=3)
    rows = SortedRows.build(w, fisher)
    bounds, lut = kmeans_bounds(rows, 3)
    strictly_better = False
    for _ in range(3, 8):
        errors = {}
        for method in ("exact", "lloyd"):
            b, table = split_bounds(rows, bounds, lut, iterations=10, method=method)
            errors[method] = weighted_sse(w, sensitivity_floor(fisher), rows.codes(b), table)  # the objective
            if method == "exact":
                next_bounds, next_lut = b, table
        assert bool((errors["exact"] <= errors["lloyd"] * (1 + 1e-5) + 1e-12).all())
        strictly_better |= bool((errors["exact"] < errors["lloyd"] * (1 - 1e-3)).any())
        bounds, lut = next_bounds, next_lut
    assert strictly_better


def test_seed_solver_matches_flash1dkmeans():
    """Our batched greedy k-means++ + Lloyd against the Any-Precision authors' package on the same rows."""
    flash = pytest.importorskip("flash1dkmeans")
    w, fisher = _heavy_tailed(16, 256)
    f = sensitivity_floor(fisher)
    for bits in (3, 4):
        codes, lut = weighted_kmeans(w, fisher, bits)
        ours = float(weighted_sse(w, f, codes, lut).sum())
        theirs = 0.0
        for r in range(16):
            c, labels = flash.kmeans_1d(w[r].double().numpy(), 2**bits, max_iter=50,
                                        sample_weights=f[r].double().numpy(), random_state=0)
            theirs += float((f[r].double().numpy() * (w[r].double().numpy() - c[labels]) ** 2).sum())
        assert ours <= 1.1 * theirs, (bits, ours, theirs)


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
    layer.set_precision(5)
    for bad in (4.7, "4", 4.0, True):
        with pytest.raises(ValueError, match="must be an integer number of bits"):
            layer.set_precision(bad)
    assert layer.precision == 5


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


def test_blocked_path_keeps_no_dense_weight(nested, monkeypatch):
    import hf_ext.any_precision.layer as layer_mod

    codes8, luts = nested
    monkeypatch.setattr(layer_mod, "DEQUANT_BLOCK_ELEMENTS", 700)  # 7 rows of 100: four blocks, the last partial
    release_workspace()
    plain = AnyPrecisionLinear.from_codes(codes8, luts, 8, bias=torch.randn(24))
    cached = AnyPrecisionLinear.from_codes(codes8, luts, 8, cache="active")
    cached.bias = plain.bias
    x = torch.randn(2, 5, 100)
    for k in (3, 5, 8):
        plain.set_precision(k)
        cached.set_precision(k)
        y = plain(x)
        assert torch.equal(y, cached(x))  # same row blocks: bit-identical
        assert torch.allclose(y, x @ plain.dequantize(k, torch.float32).T + plain.bias, atol=1e-5)
    assert plain.cache_nbytes() == 0 and cached.cache_nbytes() == 24 * 100 * 4
    assert workspace_nbytes() == plain.workspace_nbytes() == 7 * 100 * 4


def test_cpu_gemv_matches_the_dequantized_matmul(nested):
    codes8, luts = nested
    bias = torch.randn(24)
    gemv = AnyPrecisionLinear.from_codes(codes8, luts, 8, bias=bias, cpu_kernel="gemv")
    blocked = AnyPrecisionLinear.from_codes(codes8, luts, 8, bias=bias)
    for k in (3, 4, 8):
        gemv.set_precision(k)
        blocked.set_precision(k)
        x = torch.randn(1, 3, 100)  # 3 tokens: the GEMV
        ref = x @ gemv.dequantize(k, torch.float32).T + bias
        assert torch.allclose(gemv(x), ref, atol=1e-4, rtol=1e-4)
        long = torch.randn(20, 100)  # more tokens than gemv_max_tokens: the blocked path
        assert torch.equal(gemv(long), blocked(long))
    with pytest.raises(ValueError, match="cpu_kernel must be one of"):
        AnyPrecisionLinear(100, 24, False, [3], cpu_kernel="fast")


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        (dict(seed_bits=5, max_bits=4), r"seed_bits \(5\) must not exceed max_bits \(4\)"),
        (dict(seed_bits=1), "seed_bits must be an integer in 2..8, got 1"),
        (dict(max_bits=9), "max_bits must be an integer in 2..8, got 9"),
        (dict(precisions=[3, 12]), r"precisions must be .* got \[3, 12\]"),
        (dict(cache_dequantized="sometimes"), "cache_dequantized must be one of"),
        (dict(n_samples=0), "n_samples must be an integer >= 1"),
        (dict(seqlen=2.5), "seqlen must be an integer"),
        (dict(default_precision=4.7), "default_precision must be an integer, got 4.7"),
        (dict(default_precision="4"), "default_precision must be an integer, got '4'"),
        (dict(seed_bits=3, max_bits=5, default_precision=8), r"default_precision 8 is not stored; .* \[3, 4, 5\]"),
        (dict(available_precisions=[3, 4], default_precision=6), r"default_precision 6 is not stored"),
        (dict(precisions=[3, 4.5]), "precisions must be a non-empty list of integer bits"),
        (dict(split_method="median"), "split_method must be 'exact' or 'lloyd'"),
        (dict(cpu_kernel="fast"), "cpu_kernel must be one of"),
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
