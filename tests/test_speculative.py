"""Speculative generate() on tiny models: greedy identity, sampling distribution, caches, stopping, errors."""

import pytest
import torch
from scipy.stats import chisquare
from transformers import AutoModelForCausalLM, LlamaForCausalLM, LogitsProcessorList
from transformers.generation.logits_process import (
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

import hf_ext
from hf_ext.common.models import tiny_config, tiny_model
from hf_ext.speculative import (
    PromptLookupDrafter,
    SpeculativeGenerationMixin,
    SpeculativeStats,
    frequency_vocab,
    select_draft,
    shallow_self_draft,
)

spec_generate = hf_ext.speculative.generate



def _random_batch(gen, batch, vocab=320, lo=3, hi=14):
    lengths = torch.randint(lo, hi, (batch,), generator=gen)
    width = int(lengths.max())
    ids = torch.randint(4, vocab, (batch, width), generator=gen)
    mask = torch.ones(batch, width, dtype=torch.long)
    for b in range(batch):
        pad = width - int(lengths[b])
        ids[b, :pad] = 0
        mask[b, :pad] = 0
    return ids, mask


@pytest.fixture(scope="module", params=["llama", "gemma", "opt"])
def family_models(request):
    target, tok = tiny_model(request.param, seed=0)
    other, _ = tiny_model(request.param, seed=1)
    return request.param, target, other


def test_greedy_identity_random_prompts_lookaheads_batches(family_models):
    family, target, other = family_models
    gen = torch.Generator().manual_seed(hash(family) % 1000)
    drafts = [shallow_self_draft(target, 1), other, PromptLookupDrafter(), shallow_self_draft(target, 2)]
    lookaheads = [1, 2, 3, 5, "auto", 8]
    for trial in range(8):
        batch = 1 + trial % 4
        ids, mask = _random_batch(gen, batch)
        # gemma's sliding window (16) is passed by ~40 generated tokens: crop must keep it exact
        ref = target.generate(input_ids=ids, attention_mask=mask, max_new_tokens=30, do_sample=False)
        draft = drafts[trial % len(drafts)]
        gamma = lookaheads[trial % len(lookaheads)]
        out = target.generate(input_ids=ids, attention_mask=mask, max_new_tokens=30, do_sample=False,
                              custom_generate=spec_generate, draft_model=draft, num_draft_tokens=gamma)
        assert out.shape == ref.shape, (trial, family)
        assert torch.equal(out, ref), (trial, family, gamma)


def test_greedy_identity_with_perfect_draft_and_processors():
    target, _ = tiny_model("llama", seed=3)
    ids, mask = _random_batch(torch.Generator().manual_seed(5), 3)
    kw = dict(input_ids=ids, attention_mask=mask, max_new_tokens=25, do_sample=False, repetition_penalty=1.4)
    ref = target.generate(**kw)
    stats = SpeculativeStats()
    out = target.generate(**kw, custom_generate=spec_generate, draft_model=target, num_draft_tokens=6,
                          speculative_stats=stats)
    assert torch.equal(out, ref)
    assert stats.acceptance == 1.0 and stats.mean_accepted_length > 5  # the target drafting for itself
    assert stats.new_tokens == 25


def test_eos_and_padding_match_plain_generate():
    target, _ = tiny_model("llama", seed=0)
    draft = shallow_self_draft(target, 2)
    ids, mask = _random_batch(torch.Generator().manual_seed(11), 4)
    free = target.generate(input_ids=ids, attention_mask=mask, max_new_tokens=20, do_sample=False)
    eos = int(free[0, ids.shape[1] + 4])  # a token row 0 emits mid-way: rows stop at different steps
    ref = target.generate(input_ids=ids, attention_mask=mask, max_new_tokens=20, do_sample=False, eos_token_id=eos)
    out = target.generate(input_ids=ids, attention_mask=mask, max_new_tokens=20, do_sample=False, eos_token_id=eos,
                          custom_generate=spec_generate, draft_model=draft, num_draft_tokens=4)
    assert torch.equal(out, ref)
    assert (out[0, ids.shape[1] + 5:] == target.generation_config.pad_token_id).all()


def test_kv_caches_are_reused():
    target, _ = tiny_model("llama", seed=0)
    draft, _ = tiny_model("llama", seed=1)
    seen = {"target": [], "draft": []}
    hooks = [m.register_forward_pre_hook(lambda mod, a, k, n=n: seen[n].append(k["input_ids"].shape[1]),
                                         with_kwargs=True) for n, m in (("target", target), ("draft", draft))]
    ids = torch.randint(4, 320, (2, 12))
    target.generate(input_ids=ids, max_new_tokens=20, do_sample=False, custom_generate=spec_generate,
                    draft_model=draft, num_draft_tokens=3)
    for h in hooks:
        h.remove()
    assert seen["target"][0] == 12 and max(seen["target"][1:]) <= 4  # prefill, then only pending + draft
    assert seen["draft"][0] == 13 and max(seen["draft"][1:]) <= 2  # prefill, then the new tokens only


def test_mixin_generate_with_draft_model():
    class SpecLlama(SpeculativeGenerationMixin, LlamaForCausalLM):
        pass

    config = tiny_config("llama", vocab_size=320)
    torch.manual_seed(0)
    model = SpecLlama(config).eval()
    ids = torch.randint(4, 320, (1, 9))
    ref = model.generate(input_ids=ids, max_new_tokens=15, do_sample=False)
    out = model.generate(input_ids=ids, max_new_tokens=15, do_sample=False, draft_model=shallow_self_draft(model, 1),
                         num_draft_tokens="auto")
    assert torch.equal(out, ref)
    res = model.generate(input_ids=ids, max_new_tokens=5, draft_model=model, num_draft_tokens=2,
                         return_dict_in_generate=True)
    assert torch.equal(res.sequences, ref[:, :14])


def test_bad_inputs_raise_clear_errors():
    target, _ = tiny_model("llama", seed=0)
    ids = torch.randint(4, 300, (1, 6))
    other_vocab = AutoModelForCausalLM.from_config(tiny_config("llama", vocab_size=300))
    with pytest.raises(ValueError, match="vocabulary"):
        target.generate(input_ids=ids, max_new_tokens=4, custom_generate=spec_generate, draft_model=other_vocab)
    for bad in (0, -2, True, "fast", 1.5):
        with pytest.raises(ValueError, match="num_draft_tokens"):
            target.generate(input_ids=ids, max_new_tokens=4, custom_generate=spec_generate, draft_model=target,
                            num_draft_tokens=bad)
    with pytest.raises(ValueError, match="draft_model"):
        target.generate(input_ids=ids, max_new_tokens=4, custom_generate=spec_generate)
    with pytest.raises(ValueError, match="num_layers"):
        shallow_self_draft(target, 0)


def test_shallow_draft_shares_weights_and_reduces_head():
    target, tok = tiny_model("gemma", seed=0)
    full = shallow_self_draft(target, 3)
    ids = torch.randint(4, 320, (2, 10))
    assert torch.equal(full(input_ids=ids).logits, target(input_ids=ids).logits)  # all blocks: the target itself
    keep = frequency_vocab(tok, ["def main(): return 0 if x > 1 else None. The quick brown fox."], 40)
    draft = shallow_self_draft(target, 1, keep)
    assert len(target.model.layers) == 3 and len(draft.model.layers) == 1
    q_proj = target.model.layers[0].self_attn.q_proj.weight
    assert draft.model.layers[0].self_attn.q_proj.weight.data_ptr() == q_proj.data_ptr()
    sub = draft(input_ids=ids).logits
    ref = shallow_self_draft(target, 1)(input_ids=ids).logits
    assert torch.allclose(sub[..., keep], ref[..., keep], atol=1e-5)
    outside = torch.ones(320, dtype=torch.bool)
    outside[keep] = False
    assert (sub[..., outside] < -1e8).all() and set(tok.all_special_ids) <= set(keep.tolist())


def _exact_three_token_distribution(target, prompt, processors):
    """p(t1, t2, t3 | prompt) under the processors, by enumeration over a tiny vocabulary."""
    v = target.config.vocab_size

    def step(ctx):
        logits = target(input_ids=ctx).logits[:, -1].float()
        return torch.softmax(processors(ctx, logits), -1)

    p1 = step(prompt)[0]
    ctx2 = torch.cat([prompt.expand(v, -1), torch.arange(v)[:, None]], 1)
    p2 = step(ctx2)
    ctx3 = torch.cat([ctx2.repeat_interleave(v, 0), torch.arange(v).repeat(v)[:, None]], 1)
    p3 = step(ctx3).view(v, v, v)
    return p1[:, None, None] * p2[:, :, None] * p3


@pytest.mark.parametrize("draft_kind", ["model", "lookup"])
def test_sampling_follows_target_distribution_chi_square(draft_kind):
    vocab, n = 6, 6000
    torch.manual_seed(0)
    config = tiny_config("llama", vocab_size=vocab, pad_token_id=0, eos_token_id=None)  # no eos: 3 free tokens
    target = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        target.lm_head.weight.mul_(6)  # peaked enough that top-p / top-k bite
    torch.manual_seed(1)
    draft = AutoModelForCausalLM.from_config(config).eval()
    prompt = torch.tensor([[1, 3, 4, 2, 5]])
    kw = dict(do_sample=True, temperature=0.8, top_k=5, top_p=0.9)
    procs = LogitsProcessorList([TemperatureLogitsWarper(0.8), TopKLogitsWarper(5), TopPLogitsWarper(0.9)])
    with torch.no_grad():
        exact = _exact_three_token_distribution(target, prompt, procs).flatten()
    torch.manual_seed(123)
    out = target.generate(input_ids=prompt.expand(n, -1), max_new_tokens=3, custom_generate=spec_generate,
                          draft_model=draft if draft_kind == "model" else PromptLookupDrafter(), num_draft_tokens=2,
                          **kw)
    new = out[:, -3:]
    cells = new[:, 0] * vocab * vocab + new[:, 1] * vocab + new[:, 2]
    counts = torch.bincount(cells, minlength=vocab**3).double()
    assert counts[exact == 0].sum() == 0  # nothing outside the processed support
    expected = exact.double() * n
    big = expected >= 5
    assert _chi2_pvalue(counts, expected, big) > 1e-3
    # the same test has power: the draft's own samples are rejected
    torch.manual_seed(7)
    own = draft.generate(input_ids=prompt.expand(n, -1), max_new_tokens=3, **kw)[:, -3:]
    own_counts = torch.bincount(own[:, 0] * vocab * vocab + own[:, 1] * vocab + own[:, 2], minlength=vocab**3)
    assert _chi2_pvalue(own_counts.double(), expected, big) < 1e-6


def _chi2_pvalue(counts, expected, big):
    """Chi-square over the cells expecting >= 5 samples plus one pooled cell for the rest (if it has mass)."""
    obs, exp = [counts[big]], [expected[big]]
    if expected[~big].sum() > 0:
        obs.append(counts[~big].sum()[None])
        exp.append(expected[~big].sum()[None])
    obs, exp = torch.cat(obs), torch.cat(exp)
    return chisquare(obs.numpy(), (exp * obs.sum() / exp.sum()).numpy()).pvalue


def test_select_draft_ranks_candidates():
    target, tok = tiny_model("llama", seed=0)
    other, _ = tiny_model("llama", seed=1)
    prompts = torch.randint(4, 320, (2, 10))
    ranks = select_draft(target, {"self": target, "random": other}, prompts, max_new_tokens=12, max_gamma=6)
    by_name = {r.name: r for r in ranks}
    assert by_name["self"].acceptance == 1.0 and by_name["random"].acceptance < 0.5
    assert ranks[0].predicted_tps >= ranks[1].predicted_tps
    assert all(r.measured_tps > 0 and r.baseline_tps > 0 for r in ranks)
    with pytest.raises(ValueError, match="tokenizer"):
        select_draft(target, [other], ["hello"])


def test_demo_row_on_tiny_model(monkeypatch, tmp_path):
    from hf_ext.cli import DemoContext
    from hf_ext.speculative import demo

    text = "def main(): return 0 if x > 1 else None. The quick brown fox jumps over the lazy dog. " * 4
    monkeypatch.setattr(demo, "_texts", lambda: ([text], text))
    monkeypatch.setattr(demo, "DEMO_NEW_TOKENS", 12)
    monkeypatch.setattr(demo, "DEMO_TRAINING", dict(demo.DEMO_TRAINING, n_samples=4, seqlen=32, max_steps=4,
                                                    draft_vocab_size=100))
    monkeypatch.setenv("HF_EXT_CACHE", str(tmp_path))
    monkeypatch.setattr(demo, "_draft_folders", lambda: sorted((tmp_path / "speculative").glob("eagle-*")))
    target, tok = tiny_model("gemma", seed=0)
    rows = demo.demo_rows(target, tok, DemoContext())
    assert [r.capability for r in rows] == ["speculative"] * 2 and all(r.value > 0 for r in rows)
    assert all("identical" in r.note for r in rows)
    assert "trained here" in rows[1].note and "EAGLE" in rows[1].setting
    again = demo.demo_rows(target, tok, DemoContext())  # the draft trained above is found and reused
    assert "trained draft from eagle-demo" in again[1].note


def test_sampling_path_with_padding_top_k_one_equals_greedy():
    """With top_k=1 rejection sampling is deterministic: a padded batch must reproduce plain greedy exactly."""
    target, _ = tiny_model("gemma", seed=0)
    draft, _ = tiny_model("gemma", seed=2)
    ids, mask = _random_batch(torch.Generator().manual_seed(3), 3)
    ref = target.generate(input_ids=ids, attention_mask=mask, max_new_tokens=24, do_sample=False)
    for d in (draft, PromptLookupDrafter(), shallow_self_draft(target, 2)):
        out = target.generate(input_ids=ids, attention_mask=mask, max_new_tokens=24, do_sample=True, top_k=1,
                              custom_generate=spec_generate, draft_model=d, num_draft_tokens=3)
        assert torch.equal(out, ref)


@pytest.mark.slow
def test_default_model_greedy_identity_with_self_draft():
    from hf_ext.common.models import load_default_model

    model, tok = load_default_model()
    tok.padding_side = "left"
    text = "The following functions are defined in the os module. Return the name of the current directory, and"
    inputs = tok([text, "def main():"], return_tensors="pt", padding=True)
    keep = frequency_vocab(tok, [text * 3], 2048)
    draft = shallow_self_draft(model, 18, keep)
    ref = model.generate(**inputs, max_new_tokens=24, do_sample=False)
    stats = SpeculativeStats()
    out = model.generate(**inputs, max_new_tokens=24, do_sample=False, custom_generate=spec_generate,
                         draft_model=draft, num_draft_tokens="auto", speculative_stats=stats)
    assert torch.equal(out, ref)
    assert stats.acceptance > 0.5


def test_auto_carries_latency_and_acceptance_across_calls():
    from hf_ext.speculative import mixin

    target, _ = tiny_model("llama", seed=4)
    draft = shallow_self_draft(target, 2)
    ids = torch.randint(4, 320, (1, 10))
    first, second = SpeculativeStats(), SpeculativeStats()
    for stats in (first, second):
        out = target.generate(input_ids=ids, max_new_tokens=16, do_sample=False, custom_generate=spec_generate,
                              draft_model=draft, num_draft_tokens="auto", speculative_stats=stats)
        assert torch.equal(out, target.generate(input_ids=ids, max_new_tokens=16, do_sample=False))
    assert first.profile is second.profile and set(first.profile.target) >= {1, 2, 4, 8}  # target timed once
    assert draft in mixin._DRAFT_LATENCY and target in mixin._ACCEPTANCE[draft]
    (p1, t1), (p2, t2) = _counts(first), _counts(second)
    assert t1 > 0 and mixin._ACCEPTANCE[draft][target] == (p1 + p2, t1 + t2)  # the second call started from the first
    assert second.acceptance == (p2 / t2 if t2 else 0.0)  # its own stats report only its own iterations


def _counts(stats: SpeculativeStats) -> tuple[int, int]:
    """(passed, tested) draft tokens of one call, from its per-row accepted lengths."""
    passed = tested = 0
    for row, g in zip(stats.row_accepted, [g for g in stats.gammas if g > 0]):
        passed += sum(row)
        tested += sum(min(n + 1, g) for n in row)
    return passed, tested


def test_drafts_made_by_our_own_compression_keep_greedy_identity(tiny_text_dir):
    # A structurally pruned copy and a 3-bit any-precision copy of the target are drafts like any other
    # same-vocabulary model: verification keeps the output the target's own.
    import copy

    from hf_ext.any_precision import AnyPrecisionConfig
    from hf_ext.any_precision import quantize as any_precision_quantize
    from hf_ext.structured import StructuredPruningConfig, prune_structured

    target, tok = tiny_model("llama", seed=0)
    pruned = prune_structured(copy.deepcopy(target), tok, StructuredPruningConfig(
        ratio=0.35, criterion="activation", calibration=str(tiny_text_dir), n_samples=2, seqlen=32))
    low_bit = any_precision_quantize(copy.deepcopy(target), tok, AnyPrecisionConfig(
        seed_bits=2, max_bits=3, calibration=str(tiny_text_dir), n_samples=2, seqlen=32))
    low_bit.set_precision(2)
    ids, mask = _random_batch(torch.Generator().manual_seed(21), 3)
    ref = target.generate(input_ids=ids, attention_mask=mask, max_new_tokens=20, do_sample=False)
    for draft in (pruned, low_bit):
        out = target.generate(input_ids=ids, attention_mask=mask, max_new_tokens=20, do_sample=False,
                              custom_generate=spec_generate, draft_model=draft, num_draft_tokens=4)
        assert torch.equal(out, ref)


def test_cli_generate_and_select_draft(tmp_path, tiny_text_dir):
    import subprocess
    import sys

    model, tok = tiny_model("llama")
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    base = [sys.executable, "-m", "hf_ext.cli", "speculative"]
    common = ["--model", str(tmp_path / "m"), "--max-new-tokens", "8", "--vocab-data", str(tiny_text_dir)]
    res = subprocess.run([*base, "generate", *common, "--prompt", "The model reads a token", "--draft", "self:1",
                          "--num-draft-tokens", "2"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "identical to plain greedy" in res.stdout
    res = subprocess.run([*base, "select-draft", *common, "--draft", "lookup", "self:2", "--prompts",
                          "a b a b a b a b", "the model reads"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "| lookup |" in res.stdout and "| self:2 |" in res.stdout
    res = subprocess.run([*base, "generate", *common, "--prompt", "x", "--draft", "self:0"], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 2 and "self:K needs a positive block count" in res.stderr


def test_select_draft_keeps_the_draft_prefill_out_of_its_step_time():
    import time as _time

    from hf_ext.speculative import ModelDrafter

    class SlowPrefill(ModelDrafter):
        """A draft whose prompt catch-up is slow (a big prompt on a deep draft) but whose steps are fast."""

        def propose(self, state, num_tokens, sampler):
            if self.cached == 0:
                _time.sleep(0.25)
            return super().propose(state, num_tokens, sampler)

    target, _ = tiny_model("llama", seed=0)
    prompts = torch.randint(4, 320, (1, 10))
    slow = SlowPrefill(shallow_self_draft(target, 1))
    ranks = {r.name: r for r in select_draft(target, {"slow": slow, "lookup": PromptLookupDrafter()}, prompts,
                                             max_new_tokens=16, max_gamma=6)}
    assert ranks["slow"].draft_step_ms < 100  # 250 ms of prefill would dominate a per-step average otherwise
    assert ranks["lookup"].acceptance_model == "position" and ranks["slow"].acceptance_model == "iid"
    assert ranks["slow"].measured_tps > 1.0 / 0.25  # decode-only: the slow catch-up is not in the measurement
