"""The Optimum door: ``X.from_pretrained(path).quantize(save_dir=..., quantization_config=...)`` for each method."""

import pytest
import torch
from optimum.quantization_base import OptimumQuantizer
from transformers import AutoModelForCausalLM

from hf_ext.any_precision import AnyPrecisionConfig
from hf_ext.any_precision.optimum import OptimumAnyPrecisionQuantizer
from hf_ext.compression import CompressionConfig
from hf_ext.compression.optimum import OptimumCompressionQuantizer
from hf_ext.structured import StructuredPruningConfig
from hf_ext.structured.optimum import OptimumStructuredPruner


@pytest.fixture(scope="module")
def saved(tiny_model_dir):
    return tiny_model_dir("opt", name="src")


def _cases(calib):
    small = dict(calibration=calib, n_samples=2, seqlen=32)
    return [
        (OptimumCompressionQuantizer, CompressionConfig(sparsity=0.5, **small), "hf_ext_compression"),
        (OptimumStructuredPruner, StructuredPruningConfig(ratio=0.3, criterion="magnitude", **small),
         "hf_ext_structured"),
        (OptimumAnyPrecisionQuantizer, AnyPrecisionConfig(seed_bits=2, max_bits=3, **small), "hf_ext_any_precision"),
    ]


@pytest.mark.parametrize("index", [0, 1, 2])
def test_quantize_writes_a_folder_that_reloads(saved, calib, tmp_path, index):
    cls, cfg, method = _cases(calib)[index]
    quantizer = cls.from_pretrained(str(saved))
    assert isinstance(quantizer, OptimumQuantizer)
    out = quantizer.quantize(save_dir=tmp_path / "out", quantization_config=cfg)
    again = AutoModelForCausalLM.from_pretrained(out)
    assert again.config.quantization_config.quant_method == method
    ids = torch.tensor([[1, 5, 9, 12]])
    with torch.no_grad():
        torch.testing.assert_close(again(ids).logits, quantizer.model(ids).logits)


def test_wrong_config_and_non_empty_folder_are_refused_before_work(saved, calib, tmp_path):
    quantizer = OptimumCompressionQuantizer.from_pretrained(str(saved))
    with pytest.raises(ValueError, match="takes a CompressionConfig, got AnyPrecisionConfig"):
        quantizer.quantize(save_dir=tmp_path / "a", quantization_config=AnyPrecisionConfig(calibration=calib))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        quantizer.quantize(save_dir=tmp_path / "b", quantization_config=CompressionConfig(calibration=calib))
    assert getattr(quantizer.model, "hf_quantizer", None) is None  # nothing was applied
