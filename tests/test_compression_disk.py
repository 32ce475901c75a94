"""Compression streamed from disk (``compress_checkpoint``): one block in memory, output identical to the in-memory
path, reload with plain from_pretrained, Hub-style OPT keys, CLI, errors and atomic output."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

import hf_ext  # noqa: F401  (registers the quantization methods)
from hf_ext.common.arch import UnsupportedArchitectureError
from hf_ext.common.models import tiny_model
from hf_ext.common.offload import DiskOffload, SafetensorsCheckpoint
from hf_ext.compression import CompressionConfig, compress, compress_checkpoint

SMALL = dict(n_samples=2, seqlen=32, group_size=32)


def _save_tiny(family: str, folder, max_shard_size: str | None = None):
    model, tok = tiny_model(family, num_hidden_layers=3)
    kw = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(folder, **kw)
    tok.save_pretrained(folder)
    return model, tok


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("family, allocation, metric, bits", [
    ("llama", "mrp", "sparsegpt", 4), ("opt", "owl", "wanda", None), ("gemma", "uniform", "sparsegpt", None),
])
def test_from_disk_equals_in_memory(family, allocation, metric, bits, calib, tmp_path, monkeypatch):
    src = tmp_path / "src"
    model, tok = _save_tiny(family, src, max_shard_size="200KB")  # a sharded checkpoint with an index
    cfg = CompressionConfig(sparsity=0.6, allocation=allocation, metric=metric, bits=bits, calibration=calib, **SMALL)

    seen = []  # blocks in memory whenever one is read: never more than the one being read
    original = DiskOffload.onload

    def spy(self, index, name, block, device):
        original(self, index, name, block, device)
        blocks = self.model.get_submodule(self.arch.blocks)
        seen.append([i for i, b in enumerate(blocks) if not any(p.is_meta for p in b.parameters())])

    monkeypatch.setattr(DiskOffload, "onload", spy)
    report = compress_checkpoint(src, tmp_path / "out", cfg)
    assert seen == [[i] for i in range(3)] * (len(seen) // 3)  # only the block being read is in memory
    assert len(seen) == 3 * (1 if allocation == "uniform" else 2)  # a statistics pass for OWL / MRP

    reference = compress(model, tok, cfg)
    ids = torch.randint(0, model.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert torch.equal(_logits(reloaded, ids), _logits(reference, ids))
    for name, tensor in reference.state_dict().items():  # every stored tensor bit for bit
        assert torch.equal(reloaded.state_dict()[name], tensor), name
    saved = json.loads((tmp_path / "out" / "config.json").read_text())["quantization_config"]
    assert saved["quant_method"] == "hf_ext_compression"
    assert saved["achieved_sparsity"] == pytest.approx(report.achieved_sparsity, abs=1e-6)
    assert saved["block_sparsities"] == reference.config.quantization_config.block_sparsities
    assert (tmp_path / "out" / "README.md").is_file() and (tmp_path / "out" / "compression_report.png").is_file()


def test_hub_style_opt_keys_and_raw_copy(calib, tmp_path):
    """Hub OPT checkpoints store keys without the ``model.`` prefix; the embeddings are copied byte for byte."""
    src = tmp_path / "src"
    _save_tiny("opt", src)
    tensors = load_file(src / "model.safetensors")
    stripped = {k.removeprefix("model."): v for k, v in tensors.items()}
    save_file(stripped, str(src / "model.safetensors"), metadata={"format": "pt"})
    compress_checkpoint(src, tmp_path / "out", CompressionConfig(sparsity=0.5, calibration=calib, **SMALL))
    out = SafetensorsCheckpoint(tmp_path / "out")
    embed = "model.decoder.embed_tokens.weight"
    assert torch.equal(out.load([embed])[embed], stripped["decoder.embed_tokens.weight"])
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert torch.equal(model.get_input_embeddings().weight, stripped["decoder.embed_tokens.weight"])


def test_from_disk_errors_leave_nothing(calib, tmp_path):
    src = tmp_path / "src"
    _save_tiny("llama", src)
    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError, match="no safetensors weights"):
        compress_checkpoint(tmp_path, out, CompressionConfig(calibration=calib, **SMALL))
    with pytest.raises(ValueError, match="is a file"):
        compress_checkpoint(src / "config.json", out, CompressionConfig(calibration=calib, **SMALL))
    # a checkpoint lacking a block tensor fails while streaming, naming it, and leaves no output folder
    tensors = load_file(src / "model.safetensors")
    del tensors["model.layers.2.mlp.down_proj.weight"]
    save_file(tensors, str(src / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(KeyError, match="model.layers.2.mlp.down_proj.weight"):
        compress_checkpoint(src, out, CompressionConfig(calibration=calib, **SMALL))
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    gpt2 = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=320)).save_pretrained(gpt2)
    tiny_model("llama")[1].save_pretrained(gpt2)
    with pytest.raises(UnsupportedArchitectureError, match="gpt2"):
        compress_checkpoint(gpt2, out, CompressionConfig(calibration=calib, **SMALL))
    assert not out.exists()
    used = CompressionConfig(calibration=calib, **SMALL)
    used.compressed_layers = {"x": 1}
    with pytest.raises(ValueError, match="already used"):
        compress_checkpoint(src, out, used)


def test_truncated_shard_is_reported(tmp_path):
    src = tmp_path / "src"
    _save_tiny("llama", src)
    ckpt = SafetensorsCheckpoint(src)
    data = (src / "model.safetensors").read_bytes()
    (src / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(OSError, match="truncated"):
        ckpt.copy_raw({"model.embed_tokens.weight": "model.embed_tokens.weight", "model.norm.weight":
                       "model.norm.weight"}, tmp_path / "copy.safetensors")


def test_cli_low_memory(calib, tmp_path):
    src = tmp_path / "src"
    _save_tiny("gemma", src)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "hf_ext.cli", "compress", str(src), "--out", str(out), "--low-memory",
           "--sparsity", "0.5", "--calibration", calib, "--n-samples", "2", "--seqlen", "32", "--group-size", "32"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "from disk" in res.stdout
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.quantization_config.achieved_sparsity == pytest.approx(0.5, abs=0.005)
    # a fresh output folder, so the refusal is about --eval with --low-memory, not the non-empty folder
    bad_cmd = [str(tmp_path / "out2") if c == str(out) else c for c in cmd] + ["--eval", "pydocs"]
    bad = subprocess.run(bad_cmd, capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "--low-memory" in bad.stderr
