"""Any-precision checkpoints keep the unquantized parts (embeddings, LM head, norms) in ``non_quantized_dtype``:
smaller files, the same model after a reload, tied weights still tied, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM

import hf_ext  # noqa: F401  (registers the quantization method for from_pretrained)
from hf_ext.any_precision import AnyPrecisionConfig, quantize
from hf_ext.any_precision.quantizer import checkpoint_file_size
from hf_ext.any_precision.storage import non_quantized_tensors, stored_non_quantized_nbytes
from hf_ext.common.models import tiny_model

IDS = torch.tensor([[1, 5, 9, 17, 33, 65, 3, 4]])


def _quantized(calib, family, dtype):
    model, tok = tiny_model(family)
    cfg = AnyPrecisionConfig(calibration=calib, n_samples=1, seqlen=32, seed_bits=2, max_bits=3,
                             non_quantized_dtype=dtype)
    return quantize(model, tok, cfg)


def _stored_dtypes(folder: Path) -> dict[str, str]:
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        return {k: f.get_slice(k).get_dtype() for k in f.keys()}


@pytest.mark.parametrize("family", ["gemma", "llama"])  # tied embeddings / untied LM head
def test_fp16_storage_round_trip_and_size(calib, tmp_path, family):
    keep = _quantized(calib, family, None)
    half = _quantized(calib, family, "float16")
    keep.save_pretrained(tmp_path / "keep")
    half.save_pretrained(tmp_path / "half")
    dtypes = _stored_dtypes(tmp_path / "half")
    float_parts = {n for n in non_quantized_tensors(half)}
    assert float_parts and all(dtypes[n] == "F16" for n in float_parts if n in dtypes)
    assert any(k.endswith("plane_0") and v == "I32" for k, v in dtypes.items())
    assert all(v == "F32" for k, v in _stored_dtypes(tmp_path / "keep").items() if k in float_parts)
    if family == "llama":
        assert dtypes["lm_head.weight"] == "F16"
    # The file shrinks by half the fp32 bytes of the unquantized parts (headers aside).
    saved = checkpoint_file_size(tmp_path / "keep") - checkpoint_file_size(tmp_path / "half")
    expect = stored_non_quantized_nbytes(half, None) - stored_non_quantized_nbytes(half, "float16")
    assert expect == stored_non_quantized_nbytes(half, None) // 2
    assert abs(saved - expect) < 4096

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "half")
    emb = reloaded.get_input_embeddings().weight
    assert emb.dtype == torch.float32  # cast back to the compute dtype
    if family == "gemma":
        assert reloaded.get_output_embeddings().weight is emb
    with torch.no_grad():
        assert torch.equal(half(IDS).logits, reloaded(IDS).logits)  # rounded in memory = what was stored
    # quantization rounded the in-memory copy, so it is exactly fp16-representable
    w = half.get_input_embeddings().weight
    assert torch.equal(w, w.half().float())
    assert not torch.equal(keep.get_input_embeddings().weight, w)


def test_non_quantized_dtype_validated_and_serialized():
    with pytest.raises(ValueError, match="non_quantized_dtype"):
        AnyPrecisionConfig(non_quantized_dtype="int8")
    for value in ("bfloat16", None):
        cfg = AnyPrecisionConfig(non_quantized_dtype=value)
        assert AnyPrecisionConfig.from_dict(cfg.to_dict()).non_quantized_dtype == value
    assert AnyPrecisionConfig().non_quantized_dtype == "float16"


def test_fp16_overflow_is_refused(calib):
    model, tok = tiny_model("llama")
    with torch.no_grad():
        model.get_input_embeddings().weight[3, 0] = 1e6
    cfg = AnyPrecisionConfig(calibration=calib, n_samples=1, seqlen=32, seed_bits=2, max_bits=3)
    with pytest.raises(ValueError, match="overflows.*bfloat16"):
        quantize(model, tok, cfg)
