"""Compression end to end on tiny OPT / Llama / Gemma: from_pretrained, compress(), save / reload, CLI, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM

import hf_ext
from hf_ext.common.arch import UnsupportedArchitectureError, named_block_linears
from hf_ext.common.models import tiny_model
from hf_ext.compression import CompressedLinear, CompressionConfig, compress
from hf_ext.compression.metrics import check_nm

SMALL = dict(n_samples=2, seqlen=32, group_size=32)



def _linears(model):
    return {n: m for n, m in named_block_linears(model).items()}


def _check_compressed(model, target, nm=None):
    linears = _linears(model)
    assert linears and all(isinstance(m, CompressedLinear) for m in linears.values())
    kept = numel = 0
    for mod in linears.values():
        keep, dense = mod.keep_mask(), mod.dequantize()
        assert torch.all(dense[~keep] == 0)  # masks really zero the weights
        assert torch.equal(mod.weight, dense)  # the forward uses what dequantize() shows
        if nm is not None:
            assert check_nm(keep, *nm)
        kept += int(keep.sum())
        numel += keep.numel()
    achieved = 1 - kept / numel
    assert abs(achieved - target) < 0.005
    assert model.config.quantization_config.achieved_sparsity == pytest.approx(achieved, abs=1e-5)
    return achieved


@pytest.mark.parametrize(
    "family, allocation, metric, bits",
    [("opt", "owl", "wanda", None), ("llama", "mrp", "sparsegpt", 4), ("gemma", "hessian", "sparsegpt", 3),
     ("gemma", "uniform", "magnitude", 8)],
)
def test_compress_in_memory_per_family(family, allocation, metric, bits, calib, tmp_path):
    model, tok = tiny_model(family)
    ids = torch.tensor([[1, 40, 41, 42, 43, 44, 45, 46]])
    dense_logits = model(ids).logits
    cfg = CompressionConfig(sparsity=0.6, allocation=allocation, metric=metric, bits=bits, calibration=calib, **SMALL)
    out = compress(model, tok, cfg)
    assert out is model and cfg.compressed_layers is None  # the caller's config is left reusable
    _check_compressed(model, 0.6)
    targets = model.config.quantization_config.block_sparsities
    assert len(targets) == 3
    if allocation in ("owl", "hessian"):  # (MRP may legitimately stay uniform on random weights)
        assert max(targets) - min(targets) > 1e-3
    logits = model(ids).logits
    assert torch.isfinite(logits).all() and not torch.allclose(logits, dense_logits)
    report = model.compression_report
    assert f"{report.achieved_sparsity:.4f}" in report.to_markdown()
    files = report.save(tmp_path)
    assert files["plot"].read_bytes()[:4] == b"\x89PNG"
    assert model.get_output_embeddings().__class__ is torch.nn.Linear  # lm_head kept dense


def test_nm_structure_holds(calib):
    model, tok = tiny_model("llama")
    compress(model, tok, CompressionConfig(sparsity=0.5, structure="2:4", metric="wanda", calibration=calib, **SMALL))
    _check_compressed(model, 0.5, nm=(2, 4))


def test_from_pretrained_save_reload_bit_exact_in_fresh_process(calib, tmp_path):
    model, tok = tiny_model("opt")
    base, out = tmp_path / "base", tmp_path / "out"
    model.save_pretrained(base)
    tok.save_pretrained(base)
    cfg = CompressionConfig(sparsity=0.7, allocation="mrp", metric="sparsegpt", bits=4, calibration=calib, **SMALL)
    comp = AutoModelForCausalLM.from_pretrained(base, quantization_config=cfg)  # tokenizer from the folder
    _check_compressed(comp, 0.7)
    ids = torch.tensor([[1, 40, 41, 42, 43, 44, 45, 46]])
    ref = {"logits": comp(ids).logits, **{n: m.dequantize() for n, m in _linears(comp).items()}}
    comp.save_pretrained(out)
    torch.save(ref, tmp_path / "ref.pt")
    saved = json.loads((out / "config.json").read_text())["quantization_config"]
    assert saved["quant_method"] == "hf_ext_compression" and len(saved["compressed_layers"]) == 18
    card = (out / "README.md").read_text()
    assert "mrp" in card and "sparsegpt" in card and "4-bit" in card and str(base) in card
    assert "https://github.com/)" not in card and "pypi.org/project/hf-ext" in card
    assert "base_model:" not in card.split("---")[1]  # a local folder is no Hub base model
    dense_size = sum(p.numel() * 4 for p in _linears(model).values() for p in [p.weight])
    packed = sum(m.packed_bytes() for m in _linears(comp).values())
    assert packed < dense_size / 6  # 30 % kept at 4 bits + 1-bit mask + scales
    code = f"""
import torch, hf_ext
torch.set_num_threads(1)
from transformers import AutoModelForCausalLM
from hf_ext.common.arch import named_block_linears
m = AutoModelForCausalLM.from_pretrained({str(out)!r})
ref = torch.load({str(tmp_path / 'ref.pt')!r})
lin = named_block_linears(m)
assert all(type(x).__name__ == "CompressedLinear" for x in lin.values())
assert all(torch.equal(lin[n].dequantize(), ref[n]) for n in lin), "weights differ"
assert torch.equal(m(torch.tensor([[1, 40, 41, 42, 43, 44, 45, 46]])).logits, ref["logits"]), "logits differ"
print("OK")
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert res.stdout.strip().endswith("OK"), res.stderr[-3000:]


def test_compress_errors(calib, tmp_path):
    model, tok = tiny_model("gemma")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        compress(model, tok, CompressionConfig(calibration=str(tmp_path / "missing.txt"), **SMALL))
    with pytest.raises(ValueError, match="group_size 48 does not divide"):
        compress(model, tok, CompressionConfig(bits=4, calibration=calib, n_samples=2, seqlen=32, group_size=48))
    with pytest.raises(ValueError, match="needs the model's tokenizer"):
        compress(model, None, CompressionConfig(calibration=calib, **SMALL))
    with pytest.raises(ValueError, match="block_sparsities has 2 entries for 3 blocks"):
        compress(model, tok, CompressionConfig(calibration=calib, block_sparsities=[0.5, 0.5], **SMALL))
    assert not any(isinstance(m, CompressedLinear) for m in model.modules())  # bad input fails before any layer
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=320))
    with pytest.raises(UnsupportedArchitectureError, match="not supported"):
        compress(gpt2, tok, CompressionConfig(calibration=calib, **SMALL))


def test_cli_compress(calib, tmp_path):
    from hf_ext.cli import main

    model, tok = tiny_model("llama")
    model.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    rc = main(["compress", str(tmp_path / "base"), "--sparsity", "0.5", "--allocation", "owl", "--metric", "wanda",
               "--bits", "4", "--group-size", "32", "--calibration", calib, "--n-samples", "2", "--seqlen", "32",
               "--eval", calib, "--out", str(tmp_path / "out")])
    assert rc == 0
    out = tmp_path / "out"
    for name in ("config.json", "model.safetensors", "README.md", "compression_report.md", "compression_report.png",
                 "tokenizer.json"):
        assert (out / name).is_file(), name
    assert "perplexity" in (out / "README.md").read_text()
    assert main(["compress", str(tmp_path / "base"), "--bits", "9", "--out", str(tmp_path / "x")]) == 2


def test_top_level_exports():
    assert hf_ext.CompressionConfig is CompressionConfig and hf_ext.compress is compress
    from transformers.quantizers.auto import AUTO_QUANTIZATION_CONFIG_MAPPING

    assert AUTO_QUANTIZATION_CONFIG_MAPPING["hf_ext_compression"] is CompressionConfig


@pytest.mark.slow
def test_default_model_demo_row():
    from hf_ext.cli import DemoContext
    from hf_ext.common.models import load_default_model
    from hf_ext.compression.demo import demo_rows

    model, tok = load_default_model()
    ctx = DemoContext(dense_ppl=10.0)
    rows = demo_rows(model, tok, ctx)
    assert rows[0].value < 100 and "achieved sparsity 0.50" in rows[0].note


def test_given_block_sparsities_are_used(calib):
    model, tok = tiny_model("gemma")
    cfg = CompressionConfig(sparsity=0.6, metric="wanda", calibration=calib, block_sparsities=[0.4, 0.6, 0.8], **SMALL)
    compress(model, tok, cfg)
    achieved = model.compression_report.block_achieved()
    assert achieved == pytest.approx([0.4, 0.6, 0.8], abs=0.005)
    _check_compressed(model, 0.6)


def test_report_plot_leaves_the_matplotlib_backend_alone(tmp_path):
    import matplotlib

    from hf_ext.compression.report import plot_allocations

    before = matplotlib.get_backend()
    matplotlib.use("svg")  # a user's choice, which the old plt-based code switched to Agg
    path = plot_allocations({"uniform": [0.5, 0.6, 0.7]}, tmp_path / "p.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.get_backend() == "svg"
    matplotlib.use(before)
