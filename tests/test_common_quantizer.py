"""The shared from_pretrained plumbing, exercised by a minimal int8 method defined here."""

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM

from hf_ext.common.arch import named_block_linears, set_submodule
from hf_ext.common.models import tiny_model
from hf_ext.common.quantizer import (
    HfExtQuantizationConfig,
    HfExtQuantizer,
    apply_to_model,
    register_method,
    replaced_modules,
)


class Int8Linear(nn.Module):
    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("q", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("scale", torch.ones(out_features, 1))

    def forward(self, x):
        return x @ (self.q.float() * self.scale).T


@dataclass
class Int8Config(HfExtQuantizationConfig):
    quant_method: ClassVar[str] = "hf_ext_test_int8"
    clip: float = field(default=1.0, metadata={"help": "fraction of the row max kept"})
    tokenizer: str | None = field(default=None, metadata={"help": "tokenizer path"})

    def validate(self):
        if not 0 < self.clip <= 1:
            raise ValueError(f"clip must be in (0, 1], got {self.clip}.")


class Int8Quantizer(HfExtQuantizer):
    needs_tokenizer = False

    def quantize(self, model, tokenizer):
        for name, lin in named_block_linears(model).items():
            new = Int8Linear(lin.in_features, lin.out_features)
            scale = lin.weight.abs().amax(1, keepdim=True) * self.quantization_config.clip / 127
            new.q.copy_((lin.weight / scale).round().clamp(-127, 127).to(torch.int8))
            new.scale.copy_(scale)
            set_submodule(model, name, new)

    def build_skeleton(self, model):
        for name, lin in named_block_linears(model).items():
            with torch.device("meta"):
                set_submodule(model, name, Int8Linear(lin.in_features, lin.out_features))


register_method(Int8Config, Int8Quantizer)


@pytest.fixture(scope="module")
def saved_float(tmp_path_factory):
    model, tok = tiny_model("llama")
    path = tmp_path_factory.mktemp("float")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return model, path


def test_config_round_trip_and_validation():
    cfg = Int8Config(clip=0.5)
    d = cfg.to_dict()
    assert d == {"quant_method": "hf_ext_test_int8", "clip": 0.5, "tokenizer": None}
    assert Int8Config.from_dict(d) == cfg
    with pytest.raises(ValueError, match="clip must be in"):
        Int8Config(clip=2.0)
    with pytest.raises(ValueError, match="expected 'hf_ext_test_int8'"):
        Int8Config.from_dict({"quant_method": "other"})


def test_registration_is_idempotent_but_a_clash_raises():
    register_method(Int8Config, Int8Quantizer)

    @dataclass
    class Other(HfExtQuantizationConfig):
        quant_method: ClassVar[str] = "hf_ext_test_int8"

    with pytest.raises(ValueError, match="already registered"):
        register_method(Other, Int8Quantizer)


def test_from_pretrained_quantizes_saves_and_reloads(saved_float, tmp_path):
    dense, path = saved_float
    model = AutoModelForCausalLM.from_pretrained(path, quantization_config=Int8Config())
    assert len(replaced_modules(model, Int8Linear)) == 3 * 7
    ids = torch.randint(3, 300, (2, 12))
    torch.testing.assert_close(model(ids).logits, dense(ids).logits, atol=0.05, rtol=0)
    model.save_pretrained(tmp_path / "q")
    # A fresh process knows nothing of this test module except by importing it: that import registers the method.
    root = str(Path(__file__).parents[1])
    code = (
        f"import sys, torch; sys.path.insert(0, {root!r}); import tests.test_common_quantizer as t;"
        "from transformers import AutoModelForCausalLM;"
        f"m = AutoModelForCausalLM.from_pretrained({str(tmp_path / 'q')!r});"
        "print(type(m.model.layers[1].mlp.down_proj).__name__);"
        f"torch.save(m(torch.tensor({ids.tolist()!r})).logits, {str(tmp_path / 'l.pt')!r})"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "Int8Linear" in out.stdout
    assert torch.equal(torch.load(tmp_path / "l.pt"), model(ids).logits)


def test_apply_to_model_matches_from_pretrained(saved_float, tmp_path):
    dense, path = saved_float
    loaded = AutoModelForCausalLM.from_pretrained(path, quantization_config=Int8Config())
    model, _ = tiny_model("llama")
    apply_to_model(model, None, Int8Config())
    ids = torch.randint(3, 300, (1, 9))
    assert torch.equal(model(ids).logits, loaded(ids).logits)
    model.save_pretrained(tmp_path / "m")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    assert torch.equal(again(ids).logits, model(ids).logits)
    with pytest.raises(ValueError, match="already carries quantization method"):
        apply_to_model(model, None, Int8Config())
