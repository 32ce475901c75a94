"""The trained EAGLE-style draft on tiny models: lossless greedy, save / reload, training lowers the loss, the CLI."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModel

import hf_ext
from hf_ext.common.models import tiny_model
from hf_ext.speculative import SpeculativeStats
from hf_ext.speculative.eagle import EagleDraftConfig, EagleDraftModel, eagle_config_for
from hf_ext.speculative.eagle_train import EagleTrainingConfig, train_eagle_draft

spec_generate = hf_ext.speculative.generate


def _padded(gen, batch, lo=4, hi=12):
    lengths = torch.randint(lo, hi, (batch,), generator=gen)
    ids = torch.randint(4, 320, (batch, int(lengths.max())), generator=gen)
    mask = torch.ones_like(ids)
    for b in range(batch):
        pad = ids.shape[1] - int(lengths[b])
        ids[b, :pad], mask[b, :pad] = 0, 0
    return ids, mask


@pytest.fixture(scope="module")
def trained(tiny_text_dir):
    target, tok = tiny_model("gemma", seed=0)
    cfg = EagleTrainingConfig(num_layers=1, draft_vocab_size=120, data=str(tiny_text_dir), n_samples=12,
                              seqlen=48, max_steps=40, batch_size=4, learning_rate=3e-3, warmup_steps=2,
                              feature_batch=6)
    result = train_eagle_draft(target, tok, cfg, target_name="tiny-gemma", progress=False)
    return target, tok, result




def test_training_lowers_the_loss(trained):
    _, _, result = trained
    losses = [v for _, v in result.losses]
    assert len(losses) >= 10
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3


@pytest.mark.parametrize("family", ["llama", "gemma", "opt"])
def test_greedy_identity_untrained_draft_every_family(family):
    target, _ = tiny_model(family, seed=0)
    draft = EagleDraftModel(eagle_config_for(target, 2, 64)).eval()
    ids, mask = _padded(torch.Generator().manual_seed(1), 3)
    # gemma's sliding window (16) is passed: the target cache crop stays exact with a feature-reading draft
    ref = target.generate(input_ids=ids, attention_mask=mask, max_new_tokens=28, do_sample=False)
    for gamma in (1, 4, "auto"):
        out = target.generate(input_ids=ids, attention_mask=mask, max_new_tokens=28, do_sample=False,
                              custom_generate=spec_generate, draft_model=draft, num_draft_tokens=gamma)
        assert torch.equal(out, ref), gamma


def test_trained_draft_is_lossless_and_accepted(trained):
    target, tok, result = trained
    draft = result.draft
    text = "the model reads a token and predicts the next one while the cache keeps keys"
    tok.padding_side = "left"
    enc = tok([text, text[:30]], return_tensors="pt", padding=True)
    ref = target.generate(**enc, max_new_tokens=24, do_sample=False)
    stats = SpeculativeStats()
    out = target.generate(**enc, max_new_tokens=24, do_sample=False, custom_generate=spec_generate,
                          draft_model=draft, num_draft_tokens=3, speculative_stats=stats)
    assert torch.equal(out, ref)
    untrained = SpeculativeStats()
    target.generate(**enc, max_new_tokens=24, do_sample=False, custom_generate=spec_generate,
                    draft_model=EagleDraftModel(draft.config).eval(), num_draft_tokens=3, speculative_stats=untrained)
    assert stats.acceptance > untrained.acceptance
    # sampling with top_k=1 is deterministic: rejection sampling over the reduced head must give greedy's tokens
    top1 = target.generate(**enc, max_new_tokens=24, do_sample=True, top_k=1, custom_generate=spec_generate,
                           draft_model=draft, num_draft_tokens=3)
    assert torch.equal(top1, ref)


def test_save_reload_identical_logits_and_card(trained, tmp_path):
    target, _, result = trained
    draft = result.draft
    draft.save_pretrained(tmp_path / "d")
    card = (tmp_path / "d" / "README.md").read_text()
    assert "tiny-gemma" in card and "EAGLE" in card
    with safe_open(tmp_path / "d" / "model.safetensors", "pt") as f:
        keys = set(f.keys())
    assert "d2t" in keys and "fc.weight" in keys and not any("embed" in k for k in keys)  # the target's stays out
    assert json.loads((tmp_path / "d" / "config.json").read_text())["model_type"] == "hf_ext_eagle_draft"
    again = EagleDraftModel.from_pretrained(tmp_path / "d").eval()
    assert isinstance(again.config, EagleDraftConfig) and torch.equal(again.d2t, draft.d2t)
    h = torch.randn(2, 7, draft.config.hidden_size, generator=torch.Generator().manual_seed(0))
    ids = torch.randint(4, 320, (2, 7))
    with torch.no_grad():
        a = draft(hidden_states=h, input_ids=ids).logits
        b = again.bind_target(target)(hidden_states=h, input_ids=ids).logits
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="bind_target"):
        EagleDraftModel.from_pretrained(tmp_path / "d")(hidden_states=h, input_ids=ids)


def test_auto_classes_load_a_draft_after_a_bare_import_hf_ext(tmp_path):
    target, _ = tiny_model("llama", seed=0)
    EagleDraftModel(eagle_config_for(target, 1, 64)).save_pretrained(tmp_path / "d")
    code = f"""
import json, sys, hf_ext
from transformers import AutoConfig, AutoModel
lazy = "hf_ext.speculative.eagle" not in sys.modules
config = AutoConfig.from_pretrained({str(tmp_path / "d")!r})
model = AutoModel.from_pretrained({str(tmp_path / "d")!r})
built = AutoModel.from_config(config)
print(json.dumps([lazy, type(config).__name__, type(model).__name__, type(built).__name__,
                  type(AutoModel.from_pretrained({str(tmp_path / "d")!r})).__name__]))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_EXT_NO_METRIC_INSTALL": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    lazy, *names = json.loads(res.stdout.strip().splitlines()[-1])
    assert lazy and names == ["EagleDraftConfig", "EagleDraftModel", "EagleDraftModel", "EagleDraftModel"]
    assert type(AutoModel.from_pretrained(tmp_path / "d")) is EagleDraftModel  # the real class, once imported


def test_bad_configs_raise():
    with pytest.raises(ValueError, match="draft_vocab_size"):
        EagleDraftConfig(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_hidden_layers=1,
                         vocab_size=320, target_vocab_size=320, draft_vocab_size=400)
    with pytest.raises(ValueError, match="max_steps"):
        EagleTrainingConfig(max_steps=0)
    with pytest.raises(ValueError, match="Unknown"):
        EagleTrainingConfig.from_dict({"layers": 2})
    target, _ = tiny_model("llama")
    other, _ = tiny_model("llama", vocab_size=400)
    draft = EagleDraftModel(eagle_config_for(target, 1, 50))
    with pytest.raises(ValueError, match="tokens"):
        draft.bind_target(other)


def test_cli_train_draft_then_generate_with_it(tmp_path, tiny_text_dir):
    import subprocess
    import sys

    model, tok = tiny_model("llama")
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    base = [sys.executable, "-m", "hf_ext.cli", "speculative"]
    res = subprocess.run([*base, "train-draft", "--model", str(tmp_path / "m"), "--data", str(tiny_text_dir),
                          "--out", str(tmp_path / "d"), "--draft-vocab", "100", "--samples", "8", "--seqlen", "32",
                          "--steps", "6", "--batch-size", "4"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / "d" / "loss_curve.png").stat().st_size > 1000
    assert len(json.loads((tmp_path / "d" / "training_log.json").read_text())["losses"]) >= 3
    res = subprocess.run([*base, "generate", "--model", str(tmp_path / "m"), "--max-new-tokens", "8", "--prompt",
                          "the model reads", "--draft", str(tmp_path / "d"), "--num-draft-tokens", "3"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "identical to plain greedy" in res.stdout
    res = subprocess.run([*base, "train-draft", "--model", str(tmp_path / "m"), "--out", str(tmp_path / "d")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and "not empty" in res.stderr


@pytest.mark.slow
def test_default_model_trained_draft_is_lossless_and_beats_untrained():
    from hf_ext.common.data import calibration_batches
    from hf_ext.common.models import load_default_model

    model, tok = load_default_model()
    cfg = EagleTrainingConfig(num_layers=1, draft_vocab_size=8192, n_samples=16, seqlen=256, max_steps=40,
                              batch_size=4, learning_rate=2e-3)
    result = train_eagle_draft(model, tok, cfg, target_name="google/gemma-3-270m", progress=False)
    assert result.losses[-1][1] < 0.5 * result.losses[0][1]
    ids = calibration_batches(tok, "pydocs", n_samples=1, seqlen=160, seed=5, split="eval")  # unseen text
    ref = model.generate(input_ids=ids, max_new_tokens=24, do_sample=False)
    trained, untrained = SpeculativeStats(), SpeculativeStats()
    out = model.generate(input_ids=ids, max_new_tokens=24, do_sample=False, custom_generate=spec_generate,
                         draft_model=result.draft, num_draft_tokens=3, speculative_stats=trained)
    assert torch.equal(out, ref)
    model.generate(input_ids=ids, max_new_tokens=24, do_sample=False, custom_generate=spec_generate,
                   draft_model=EagleDraftModel(result.draft.config).eval(), num_draft_tokens=3,
                   speculative_stats=untrained)
    assert trained.acceptance > untrained.acceptance + 0.1


def test_unrolled_training_lowers_the_loss_and_stays_lossless(tiny_text_dir, tmp_path):
    target, tok = tiny_model("llama", seed=0)
    cfg = EagleTrainingConfig(num_layers=1, draft_vocab_size=100, data=str(tiny_text_dir), n_samples=8,
                              seqlen=40, max_steps=25, batch_size=4, learning_rate=3e-3, warmup_steps=2, unroll=2)
    result = train_eagle_draft(target, tok, cfg, output_dir=str(tmp_path / "d"), progress=False)
    losses = [v for _, v in result.losses]
    assert sum(losses[-3:]) < 0.8 * sum(losses[:3])
    assert EagleDraftModel.from_pretrained(tmp_path / "d").config.train_unroll == 2
    ids = tok(["the model reads a token and"], return_tensors="pt").input_ids
    ref = target.generate(input_ids=ids, max_new_tokens=16, do_sample=False)
    out = target.generate(input_ids=ids, max_new_tokens=16, do_sample=False, custom_generate=spec_generate,
                          draft_model=result.draft, num_draft_tokens=4)
    assert torch.equal(out, ref)
    with pytest.raises(ValueError, match="unroll"):
        EagleTrainingConfig(unroll=0)
