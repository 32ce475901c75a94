"""hf_ext.privacy attacks on a tiny random model: likelihood scores, sampling, the attack() API and the CLI."""

import json
import math

import pytest
import torch

from hf_ext.common.models import tiny_model
from hf_ext.privacy import AttackConfig, SamiaConfig, attack, generate_samples, token_stats
from hf_ext.privacy.attacks import likelihood_scores

TEXTS = [
    "The quick brown fox jumps over the lazy dog and runs away",
    "Python is a programming language that lets you work quickly",
    "Sparse weights save memory and quantized weights save even more",
    "A function returns a value and a module groups functions and classes",
]
LABELS = [1, 0, 1, 0]


@pytest.fixture(scope="module")
def tiny():
    return tiny_model("llama", seed=0)


def _reference_logprobs(model, tok, text):
    ids = tok(text, return_tensors="pt").input_ids
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
    return logp, ids[0, 1:]


def test_token_stats_match_unbatched_forward(tiny):
    model, tok = tiny
    stats = token_stats(model, tok, TEXTS, batch_size=3, progress=False)  # padding inside the first batch
    for text, s in zip(TEXTS, stats):
        logp, target = _reference_logprobs(model, tok, text)
        assert torch.allclose(s.logprobs, logp.gather(-1, target[:, None])[:, 0], atol=1e-4)
        p = logp.exp()
        mu = (p * logp).sum(-1)
        sigma = ((p * logp**2).sum(-1) - mu**2).sqrt()
        assert torch.allclose(s.mu, mu, atol=1e-4) and torch.allclose(s.sigma, sigma, atol=1e-4)


def test_likelihood_scores_definitions(tiny):
    model, tok = tiny
    stats = token_stats(model, tok, TEXTS[:1], progress=False)
    lp = stats[0].logprobs
    assert likelihood_scores(stats, TEXTS[:1], "loss")[0] == pytest.approx(float(lp.mean()))
    import zlib

    zl = len(zlib.compress(TEXTS[0].encode()))
    assert likelihood_scores(stats, TEXTS[:1], "zlib")[0] == pytest.approx(float(lp.mean()) / zl)
    m = max(1, int(0.2 * lp.numel()))
    assert likelihood_scores(stats, TEXTS[:1], "min_k", 0.2)[0] == pytest.approx(float(lp.sort().values[:m].mean()))
    z = (lp - stats[0].mu) / stats[0].sigma
    assert likelihood_scores(stats, TEXTS[:1], "min_k_plus_plus", 0.2)[0] == pytest.approx(
        float(z.sort().values[:m].mean()))
    with pytest.raises(ValueError, match="Unknown likelihood attack"):
        likelihood_scores(stats, TEXTS[:1], "ppl")


def test_trained_text_scores_higher(tiny):
    """A few steps of training on one text must raise its loss / min-k scores above the others'."""
    model, tok = tiny_model("llama", seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    ids = tok(TEXTS[0], return_tensors="pt").input_ids
    model.train()
    for _ in range(8):
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    res = attack(model, tok, TEXTS, [1, 0, 0, 0], methods=["loss", "zlib", "min_k", "min_k_plus_plus"],
                 progress=False)
    for r in res.values():
        assert r.scores[0] == max(r.scores), r.method
        assert r.auroc == 1.0 and r.tpr_at_fpr == 1.0 and r.fpr == 0.1


def test_generate_samples_strips_prompt_and_respects_budget(tiny):
    model, tok = tiny
    cfg = SamiaConfig(num_samples=3, batch_size=4, max_new_tokens=5, seed=0)
    side = tok.padding_side
    rng_before = torch.random.get_rng_state()
    samples = generate_samples(model, tok, TEXTS[:2], cfg, progress=False)
    assert torch.equal(rng_before, torch.random.get_rng_state())  # caller's RNG untouched
    assert tok.padding_side == side
    assert len(samples) == 2 and all(len(s) == 3 for s in samples)
    for text, group in zip(TEXTS[:2], samples):
        prefix = " ".join(text.split()[: len(text.split()) // 2])
        for s in group:
            assert not s.startswith(prefix)  # continuation only
    assert samples == generate_samples(model, tok, TEXTS[:2], cfg, progress=False)  # seeded


def test_generate_samples_token_level_stripping():
    """The continuation is exactly the decoded new tokens: the prompt's tokens never leak into it."""
    model, tok = tiny_model("opt", seed=0)
    cfg = SamiaConfig(num_samples=2, max_new_tokens=4, seed=3)
    (group,) = generate_samples(model, tok, ["alpha beta gamma delta epsilon zeta"], cfg, progress=False)
    with torch.random.fork_rng():
        torch.manual_seed(3)
        enc = tok(["alpha beta gamma"], return_tensors="pt")
        full = model.generate(**enc, do_sample=True, top_k=50, top_p=1.0, temperature=1.0, max_new_tokens=4,
                              num_return_sequences=2, pad_token_id=tok.pad_token_id)
    expect = tok.batch_decode(full[:, enc.input_ids.shape[1]:], skip_special_tokens=True)
    assert group == expect


def test_attack_all_methods_output_format(tiny):
    model, tok = tiny
    res = attack(model, tok, TEXTS, LABELS, methods=["loss", "zlib", "min_k", "min_k_plus_plus", "samia",
                                                     "samia_zlib"],
                 config=AttackConfig(fpr=0.25), samia_config=SamiaConfig(num_samples=2, max_new_tokens=6),
                 progress=False)
    assert list(res) == ["loss", "zlib", "min_k", "min_k_plus_plus", "samia", "samia_zlib"]
    for r in res.values():
        d = r.to_dict()
        assert set(d) == {"method", "scores", "auroc", "tpr_at_fpr", "fpr", "seconds", "sampling"}
        assert len(r.scores) == 4 and all(math.isfinite(s) for s in r.scores)
        assert 0.0 <= r.auroc <= 1.0 and r.fpr == 0.25 and r.seconds > 0
    assert all(0.0 <= s <= 1.0 for s in res["samia"].scores)
    unlabeled = attack(model, tok, TEXTS, methods=["loss"], progress=False)["loss"]
    assert unlabeled.auroc is None and unlabeled.scores == res["loss"].scores


def test_attack_bad_inputs(tiny):
    model, tok = tiny
    with pytest.raises(ValueError, match="labels has 3 entries but there are 4"):
        attack(model, tok, TEXTS, [1, 0, 1], methods=["loss"], progress=False)
    with pytest.raises(ValueError, match="labels must be 0"):
        attack(model, tok, TEXTS, [1, 0, 1, -1], methods=["loss"], progress=False)
    with pytest.raises(ValueError, match="both members"):
        attack(model, tok, TEXTS, [1, 1, 1, 1], methods=["samia"], progress=False)
    with pytest.raises(ValueError, match="Unknown attack method"):
        attack(model, tok, TEXTS, LABELS, methods=["gradnorm"], progress=False)
    with pytest.raises(ValueError, match="text 1 has 1 whitespace words: too short"):
        attack(model, tok, [TEXTS[0], "short"], [1, 0], methods=["samia"], progress=False)
    with pytest.raises(ValueError, match="list of strings, not one string"):
        attack(model, tok, TEXTS[0], methods=["loss"], progress=False)
    with pytest.raises(ValueError, match="k must be in"):
        AttackConfig(k=0.0)
    with pytest.raises(ValueError, match="tpr_mode"):
        AttackConfig(tpr_mode="closest")


def test_cli_eval_mia(tmp_path, tiny, capsys):
    from hf_ext import cli

    model, tok = tiny
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    data = tmp_path / "members.jsonl"
    data.write_text("".join(json.dumps({"input": t, "label": y}) + "\n" for t, y in zip(TEXTS, LABELS)))
    out = tmp_path / "out.json"
    rc = cli.main(["eval", "mia", "--model", str(model_dir), "--data", str(data), "--methods", "loss", "min_k",
                   "samia", "--num-samples", "2", "--output", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| loss |" in printed and "| samia |" in printed and "4 texts (2 members)" in printed
    saved = json.loads(out.read_text())["results"]
    assert set(saved) == {"loss", "min_k", "samia"} and len(saved["loss"]["scores"]) == 4
    assert cli.main(["eval", "mia", "--model", str(model_dir), "--data", str(tmp_path / "nope.jsonl")]) == 2


@pytest.mark.slow
def test_demo_row_on_default_model():
    """The `hf-ext demo` row: famous passages score as members under the default model, within the time budget."""
    import time

    from hf_ext.common.models import load_default_model
    from hf_ext.privacy.demo import demo_rows

    model, tok = load_default_model()
    start = time.perf_counter()
    (row,) = demo_rows(model, tok, None)
    assert time.perf_counter() - start < 120  # ~60 s target on an idle 2-core CPU; slack for shared machines
    assert row.metric == "AUROC" and row.value > 0.7 and row.baseline > 0.7
