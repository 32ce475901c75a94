"""Any-precision on tiny OPT / Llama: quantization, switching, save / reload, partial loading, bad checkpoints,
the CLI, and a push / download round trip through a local Hub server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

import hf_ext
from hf_ext.any_precision import AnyPrecisionConfig, AnyPrecisionLinear, PrecisionNotLoadedError, quantize
from hf_ext.any_precision.model import evaluate_precisions
from hf_ext.any_precision.quantizer import compute_fisher
from hf_ext.common.models import tiny_model
from hf_ext.common.quantizer import replaced_modules

SETTINGS = {"llama": dict(seed_bits=3, max_bits=8), "opt": dict(seed_bits=2, max_bits=5)}


def _config(calib, family, **extra):
    return AnyPrecisionConfig(calibration=calib, n_samples=2, seqlen=48, **SETTINGS[family], **extra)


@pytest.fixture(scope="module")
def checkpoints(calib, tmp_path_factory):
    """family -> (family, quantized model, tokenizer, float reference model, checkpoint folder), built once."""
    built = {}

    def get(family: str):
        if family not in built:
            ref, tok = tiny_model(family)
            model, _ = tiny_model(family)
            quantize(model, tok, _config(calib, family))
            out = tmp_path_factory.mktemp(f"ckpt_{family}")
            model.save_pretrained(out)
            tok.save_pretrained(out)
            built[family] = (family, model, tok, ref, out)
        return built[family]

    return get


@pytest.fixture(params=["llama", "opt"])
def saved(request, checkpoints):
    return checkpoints(request.param)


@pytest.fixture
def saved_llama(checkpoints):
    return checkpoints("llama")


@pytest.fixture
def saved_opt(checkpoints):
    return checkpoints("opt")


def _ids(tok):
    ids = tok("The quick brown fox jumps over the lazy dog. A function returns a value", return_tensors="pt").input_ids
    return torch.cat([ids[:, :10], ids[:, 5:15]])


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def test_every_decoder_linear_is_replaced_and_error_shrinks_with_bits(saved):
    family, model, tok, ref, _ = saved
    n_linears = {"llama": 7, "opt": 6}[family] * 3
    assert len(replaced_modules(model, AnyPrecisionLinear)) == n_linears
    stored = list(range(SETTINGS[family]["seed_bits"], SETTINGS[family]["max_bits"] + 1))
    assert model.precisions == stored and model.precision == stored[-1]
    ids = _ids(tok)
    expected = _logits(ref, ids)
    errors = []
    for k in stored:
        model.set_precision(k)
        errors.append((_logits(model, ids) - expected).abs().mean().item())
    assert errors[-1] < errors[0] / 4, errors


def test_model_codes_are_prefixes_and_dequantize_is_the_lookup(saved):
    family, model, *_ = saved
    top = SETTINGS[family]["max_bits"]
    for layer in list(replaced_modules(model, AnyPrecisionLinear).values())[:4]:
        full = layer.codes(top).long()
        for k in layer.precisions:
            codes = layer.codes(k).long()
            assert torch.equal(codes, full >> (top - k))
            assert torch.equal(layer.dequantize(k), layer.lut(k).gather(1, codes))


def test_save_reload_identical_at_every_precision(saved):
    family, model, tok, _, out = saved
    files = sorted(p.name for p in out.iterdir())
    assert "README.md" in files and "model.safetensors" in files
    card = (out / "README.md").read_text()
    assert "any-precision" in card and f"| {SETTINGS[family]['seed_bits']} |" in card
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    assert reloaded.precisions == model.precisions
    ids = _ids(tok)
    for k in model.precisions:
        model.set_precision(k)
        reloaded.set_precision(k)
        assert torch.equal(_logits(model, ids), _logits(reloaded, ids)), k
    gen = dict(max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
    assert torch.equal(model.generate(ids, **gen), reloaded.generate(ids, **gen))


def test_unstored_precision_raises_clearly(saved):
    family, model, *_ = saved
    before = model.precision
    with pytest.raises(PrecisionNotLoadedError, match=r"Precision 9 is not loaded; this model holds \[.*\]"):
        model.set_precision(9)
    below = SETTINGS[family]["seed_bits"] - 1
    with pytest.raises(PrecisionNotLoadedError, match=f"Precision {below} is not loaded"):
        model.set_precision(below)
    assert model.precision == before  # a failed switch leaves the model as it was


def test_load_only_some_precisions(saved_llama):
    family, model, tok, _, out = saved_llama
    part = hf_ext.any_precision.from_pretrained(out, precisions=[3, 4])
    assert part.precisions == [3, 4]
    layer = next(iter(replaced_modules(part, AnyPrecisionLinear).values()))
    assert sorted(n for n, _ in layer.named_buffers()) == ["lut_3", "lut_4", "plane_0", "plane_1", "plane_2",
                                                          "plane_3"]
    ids = _ids(tok)
    for k in (3, 4):
        model.set_precision(k)
        part.set_precision(k)
        assert torch.equal(_logits(model, ids), _logits(part, ids))
    with pytest.raises(PrecisionNotLoadedError, match=r"holds \[3, 4\]\. The checkpoint stores \[3, 4, 5, 6, 7, 8\]"):
        part.set_precision(6)
    # the same through plain transformers
    plain = AutoModelForCausalLM.from_pretrained(out, quantization_config=AnyPrecisionConfig(precisions=[5]))
    assert plain.precisions == [5]
    # a bare keyword reaches the model constructor in transformers 5.24 (documented alternative above)
    with pytest.raises(TypeError, match="precisions"):
        AutoModelForCausalLM.from_pretrained(out, precisions=[3])


def test_partially_loaded_model_saves_what_it_holds(saved_llama, tmp_path):
    family, _, tok, _, out = saved_llama
    part = hf_ext.any_precision.from_pretrained(out, precisions=[3, 4])
    part.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert again.precisions == [3, 4]
    ids = _ids(tok)
    assert torch.equal(_logits(part, ids), _logits(again, ids))
    with pytest.raises(ValueError, match=r"Precisions \[8\] are not stored"):
        hf_ext.any_precision.from_pretrained(tmp_path, precisions=[8])


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_corrupted_checkpoint_raises(saved_opt, tmp_path):
    family, *_, out = saved_opt
    bad = _copy(out, tmp_path / "flipped")
    data = bytearray((bad / "model.safetensors").read_bytes())
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    key = next(k for k in header if k.endswith("plane_1"))
    start = 8 + n + header[key]["data_offsets"][0]
    data[start] ^= 0xFF
    (bad / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"corrupted: .*plane_1 does not match its recorded digest"):
        AutoModelForCausalLM.from_pretrained(bad)

    cut = _copy(out, tmp_path / "truncated")
    blob = (cut / "model.safetensors").read_bytes()
    (cut / "model.safetensors").write_bytes(blob[: len(blob) - 100])
    with pytest.raises(ValueError, match="is truncated"):
        AutoModelForCausalLM.from_pretrained(cut)

    (cut / "model.safetensors").write_bytes(blob[:5])
    with pytest.raises(ValueError, match="corrupted or truncated"):
        AutoModelForCausalLM.from_pretrained(cut)

    nolist = _copy(out, tmp_path / "nolist")
    cfg = json.loads((nolist / "config.json").read_text())
    cfg["quantization_config"]["checksums"] = None
    (nolist / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="lists no layers"):
        AutoModelForCausalLM.from_pretrained(nolist)


def test_from_pretrained_with_config_quantizes_a_float_checkpoint(calib, tmp_path):
    model, tok = tiny_model("llama")
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    cfg = AnyPrecisionConfig(calibration=calib, n_samples=2, seqlen=48, seed_bits=2, max_bits=3)
    q = AutoModelForCausalLM.from_pretrained(tmp_path, quantization_config=cfg)
    assert q.precisions == [2, 3]
    assert len(replaced_modules(q, AnyPrecisionLinear)) == 21
    q.set_precision(2)
    assert q.config.quantization_config.default_precision == 2


def test_card_lists_measured_perplexity(saved_opt, calib, tmp_path):
    family, model, tok, *_ = saved_opt
    results = evaluate_precisions(model, tok, data=calib, seqlen=32, max_tokens=62)
    assert sorted(results) == model.precisions and all(r["perplexity"] > 1 for r in results.values())
    model.save_pretrained(tmp_path)
    card = (tmp_path / "README.md").read_text()
    for k, r in results.items():
        assert f"| {k} | {r['perplexity']:.3f} |" in card


def test_cli_anyprec(calib, tmp_path):
    from hf_ext.cli import main

    model, tok = tiny_model("opt")
    model.save_pretrained(tmp_path / "src")
    tok.save_pretrained(tmp_path / "src")
    rc = main(["anyprec", str(tmp_path / "src"), "--seed-bits", "2", "--max-bits", "3", "--out", str(tmp_path / "o"),
               "--calibration", calib, "--n-samples", "2", "--seqlen", "32", "--eval-tokens", "0"])
    assert rc == 0
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "o").precisions == [2, 3]
    assert main(["anyprec", str(tmp_path / "src"), "--seed-bits", "4", "--max-bits", "3", "--out",
                 str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists()


_HUB_SCRIPT = r"""
import sys, torch, hf_ext
from transformers import AutoModelForCausalLM
from hf_ext.common.models import tiny_model
from huggingface_hub import HfApi
ckpt = sys.argv[1]
model = AutoModelForCausalLM.from_pretrained(ckpt)
tok = tiny_model("llama")[1]
model.set_precision(4)
model.push_to_hub("user/tiny-anyprec")
files = HfApi().list_repo_files("user/tiny-anyprec")
assert "README.md" in files and "model.safetensors" in files, files
pulled = AutoModelForCausalLM.from_pretrained("user/tiny-anyprec")
assert pulled.precision == 4, pulled.precision
ids = tok(["The quick brown fox jumps over"], return_tensors="pt").input_ids
with torch.no_grad():
    for k in model.precisions:
        model.set_precision(k); pulled.set_precision(k)
        assert torch.equal(model(ids).logits, pulled(ids).logits), k
part = hf_ext.any_precision.from_pretrained("user/tiny-anyprec", precisions=[3])
assert part.precisions == [3]
print("ROUND TRIP OK", model.precisions)
"""


def test_push_and_download_through_local_hub(saved_llama, tmp_path):
    family, *_, out = saved_llama
    sys.path.insert(0, str(Path(__file__).parent))
    from hub_server import HubServer

    with HubServer() as hub:
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_TOKEN": "test-token", "HF_HOME": str(tmp_path / "home"),
               "HF_HUB_CACHE": str(tmp_path / "cache"), "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_OFFLINE": "0"}
        r = subprocess.run([sys.executable, "-c", _HUB_SCRIPT, str(out)], env=env, capture_output=True, text=True,
                           timeout=240)
        assert r.returncode == 0, r.stderr[-3000:] + "\n".join(hub.log)
        assert "ROUND TRIP OK [3, 4, 5, 6, 7, 8]" in r.stdout
        repo = hub.repos["user/tiny-anyprec"]
        assert "| 8 |" in repo.files["README.md"].decode()


def test_precomputed_fisher_gives_the_same_checkpoint(calib):
    cfg = _config(calib, "opt")
    model, tok = tiny_model("opt")
    fisher = compute_fisher(model, tok, cfg, progress=False)
    reused = quantize(tiny_model("opt")[0], tok, cfg, fisher=fisher)
    fresh = quantize(model, tok, cfg)
    assert cfg.checksums is None  # the caller's config is copied, not filled in
    for name, tensor in fresh.state_dict().items():
        assert torch.equal(reused.state_dict()[name], tensor), name


def test_set_precision_rejects_non_integers(saved_opt):
    family, model, *_ = saved_opt
    model.set_precision(3)
    for bad in (4.7, "4", 4.0):
        with pytest.raises(ValueError, match=r"precision must be an integer number of bits, got"):
            model.set_precision(bad)
    assert model.precision == 3 and model.config.quantization_config.default_precision == 3


def test_missing_tensor_is_reported_as_missing(saved_opt, tmp_path):
    from safetensors.torch import load_file, save_file

    family, *_, out = saved_opt
    bad = _copy(out, tmp_path / "missing")
    tensors = load_file(bad / "model.safetensors")
    key = next(k for k in tensors if k.endswith("plane_1"))
    del tensors[key]
    save_file(tensors, bad / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=rf"missing 1 tensor\(s\), e\.g\. '{key}'"):
        AutoModelForCausalLM.from_pretrained(bad)
    # a missing table is refused when its width is loaded, and irrelevant when it is not
    tensors = load_file(out / "model.safetensors")
    del tensors[next(k for k in tensors if k.endswith("lut_5"))]
    save_file(tensors, bad / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="missing 1 tensor"):
        AutoModelForCausalLM.from_pretrained(bad)
    assert hf_ext.any_precision.from_pretrained(bad, precisions=[2, 3]).precisions == [2, 3]


def test_default_precision_not_stored_is_refused(saved_opt, tmp_path):
    family, *_, out = saved_opt
    bad = _copy(out, tmp_path / "default")
    cfg = json.loads((bad / "config.json").read_text())
    cfg["quantization_config"]["default_precision"] = 7  # the checkpoint stores 2..5
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"default_precision 7 is not stored; the checkpoint holds \[2, 3, 4, 5\]"):
        AutoModelForCausalLM.from_pretrained(bad)
    with pytest.raises(ValueError, match="default_precision 6 is not stored"):
        AutoModelForCausalLM.from_pretrained(out, quantization_config=AnyPrecisionConfig(default_precision=6))


def test_card_has_no_placeholder_link_and_reports_resident_memory(saved_opt):
    *_, out = saved_opt
    card = (out / "README.md").read_text()
    assert "https://github.com/)" not in card and "](http" not in card
    assert "resident" in card and 'cache_dequantized="none"' in card


def test_resident_bytes_stay_within_stored_plus_one_buffer_after_generate(saved_llama):
    from hf_ext.any_precision.layer import release_workspace
    from hf_ext.any_precision.model import (
        any_precision_layers,
        memory_report,
        non_quantized_nbytes,
        resident_nbytes,
        working_buffer_nbytes,
    )

    family, _, tok, _, out = saved_llama
    release_workspace()
    model = AutoModelForCausalLM.from_pretrained(out)
    layers = any_precision_layers(model).values()
    stored = sum(m.stored_nbytes() for m in layers) + non_quantized_nbytes(model)
    buffer = working_buffer_nbytes(model)
    assert 0 < buffer <= 4 * max(m.in_features * m.out_features for m in layers)  # one layer's worth at most
    ids = _ids(tok)[:1]
    gen = dict(max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    for k in model.precisions:
        model.set_precision(k)
        model.generate(ids, **gen)
        assert resident_nbytes(model) <= stored + buffer, k
    # an opted-in dense cache is over the bound by exactly its bytes, and memory_report says so
    cached = AutoModelForCausalLM.from_pretrained(out, quantization_config=AnyPrecisionConfig(
        cache_dequantized="active"))
    cached.set_precision(4)
    cached.generate(ids, **gen)
    dense = sum(4 * m.in_features * m.out_features for m in layers)
    assert resident_nbytes(cached) - resident_nbytes(model) == dense
    assert memory_report(cached)[4]["cache_mib"] * 2**20 == pytest.approx(dense)
    assert memory_report(model)[4]["cache_mib"] == 0


def test_cached_and_uncached_greedy_outputs_are_identical(saved):
    family, _, tok, _, out = saved
    plain = AutoModelForCausalLM.from_pretrained(out)
    cached = AutoModelForCausalLM.from_pretrained(out, quantization_config=AnyPrecisionConfig(cache_dequantized="all"))
    ids = _ids(tok)
    gen = dict(max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
    for k in plain.precisions:
        plain.set_precision(k)
        cached.set_precision(k)
        assert torch.equal(plain.generate(ids, **gen), cached.generate(ids, **gen)), k
        assert torch.equal(_logits(plain, ids), _logits(cached, ids)), k
