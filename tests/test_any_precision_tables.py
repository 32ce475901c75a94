"""8-bit lookup tables (``lut_dtype="int8"``): bounded rounding, every compute path agrees, half the table bytes,
and checkpoints (digests, partial loading) work unchanged."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

import hf_ext  # noqa: F401  (registers the quantization method for from_pretrained)
from hf_ext.any_precision import AnyPrecisionConfig, AnyPrecisionLinear, quantize
from hf_ext.any_precision.model import any_precision_layers
from hf_ext.any_precision.tables import decode_int8_table, encode_int8_table
from hf_ext.common.models import tiny_model


def test_encode_decode_error_is_at_most_half_a_step():
    g = torch.Generator().manual_seed(0)
    lut = torch.randn(16, 256, generator=g).sort(dim=1).values * torch.logspace(-3, 1, 16)[:, None]
    lut[3] = 0.25  # a constant row decodes exactly
    buf = encode_int8_table(lut)
    assert buf.dtype == torch.uint8 and buf.shape == (16, 260)
    dec = decode_int8_table(buf)
    step = (lut.max(1).values - lut.min(1).values) / 255
    err = (dec - lut).abs().max(1).values
    assert torch.all(err <= step * 0.5 + lut.abs().max(1).values * 2e-3)  # fp16 offset / step rounding
    assert torch.equal(dec[3], torch.full((256,), 0.25))
    assert torch.allclose(decode_int8_table(buf, 4, 9), dec[4:9])


def _layers():
    g = torch.Generator().manual_seed(1)
    codes = torch.randint(0, 256, (40, 96), generator=g, dtype=torch.uint8)
    luts = {k: torch.randn(40, 2**k, generator=g).sort(dim=1).values for k in (3, 4, 8)}
    half = AnyPrecisionLinear.from_codes(codes, luts, 8, lut_dtype=torch.float16)
    q = AnyPrecisionLinear.from_codes(codes, luts, 8, lut_dtype=torch.uint8)
    return half, q


@pytest.mark.parametrize("bits", [3, 4, 8])
def test_int8_layer_paths_agree_and_bytes_halve(bits):
    half, q = _layers()
    half.set_precision(bits)
    q.set_precision(bits)
    w = q.dequantize(bits)
    assert (w - half.dequantize(bits).float()).abs().max() < 0.05
    x1, x16 = torch.randn(1, 96), torch.randn(16, 96)
    assert torch.allclose(q(x16), x16 @ w.T, atol=1e-4)  # blocked path
    q.cpu_kernel = "gemv"
    assert torch.allclose(q(x1), x1 @ w.T, atol=1e-4)  # numba GEMV from the codes
    q.cpu_kernel, q.cache = "blocked", "active"
    assert torch.allclose(q(x16), x16 @ w.T, atol=1e-4)
    table_half = half.nbytes(bits) - q.nbytes(bits) + 40 * (2**bits + 4)
    assert table_half == 40 * 2**bits * 2  # fp16 table bytes vs uint8 codes + 4 bytes per row
    assert q.stored_nbytes() < half.stored_nbytes()


def test_quantize_tables_in_place_encodes_the_stored_tables():
    half, _ = _layers()
    before = {k: half.stored_lut(k).clone() for k in (3, 4, 8)}
    x = torch.randn(4, 96)
    half.set_precision(4)
    y_before = half(x)
    half.quantize_tables()
    for k in (3, 4, 8):
        assert torch.equal(half.stored_lut(k), encode_int8_table(before[k]))
    y = half(x)
    assert torch.allclose(y, x @ half.dequantize(4).T, atol=1e-4)
    assert 0 < (y - y_before).abs().max() < 0.01 * y_before.abs().max()


def test_int8_tables_checkpoint_round_trip_and_partial_load(calib, tmp_path):
    model, tok = tiny_model("llama")
    cfg = AnyPrecisionConfig(calibration=calib, n_samples=1, seqlen=32, seed_bits=2, max_bits=4, lut_dtype="int8")
    quantize(model, tok, cfg)
    model.set_precision(3)
    ids = torch.tensor([[1, 5, 9, 17, 33, 3]])
    with torch.no_grad():
        want = model(ids).logits
    model.save_pretrained(tmp_path)
    reloaded = hf_ext.any_precision.from_pretrained(tmp_path, precisions=[2, 3])
    layer = next(iter(any_precision_layers(reloaded).values()))
    assert layer.stored_lut(3).dtype == torch.uint8 and layer.precisions == [2, 3]
    reloaded.set_precision(3)
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, want)
    assert isinstance(AutoModelForCausalLM.from_pretrained(tmp_path), torch.nn.Module)
    with pytest.raises(ValueError, match="lut_dtype"):
        AnyPrecisionConfig(lut_dtype="int4")
