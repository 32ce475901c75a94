"""ISARA self-alignment: the bundled domain, each stage on its own, bad input, one real iteration on a tiny model."""

from __future__ import annotations

import json

import pytest
import torch

from hf_ext.alignment import (
    FilterResult,
    ISARAConfig,
    ISARATrainer,
    Retriever,
    bootstrap_ci,
    filter_samples,
    icl_prompt,
    load_heldout,
    load_seeds,
    parse_sample,
    passage_quality,
    rank_pool,
)
from hf_ext.alignment.domain import doc_passages, evidence_found

POOL = [
    "math.sqrt(x): Return the square root of x as a floating point number, for any non-negative input value.",
    "json.dumps(obj): Serialize obj to a JSON formatted string using the conversion table of this module.",
    "os.getcwd(): Return a string representing the current working directory of the running process.",
    "random.choice(seq): Return a random element from the non-empty sequence seq, or raise an IndexError.",
]


def tiny_sft(tmp_path, **kw):
    from trl import SFTConfig

    args = dict(output_dir=str(tmp_path / "sft"), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-2,
                report_to="none", save_strategy="no", bf16=False, gradient_checkpointing=False, logging_steps=1,
                disable_tqdm=True, max_length=128)
    return SFTConfig(**{**args, **kw})


def tiny_cfg(tmp_path, name="out", **kw):
    args = dict(output_dir=str(tmp_path / name), iterations=1, samples_per_iteration=4, icl_examples=2,
                retriever="bm25", max_new_tokens=8, max_prompt_tokens=160, eval_max_new_tokens=4,
                pool_min_quality=0.3, sft=tiny_sft(tmp_path))
    return ISARAConfig(**{**args, **kw})


def lora_weights(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


# ------------------------------------------------------------------------------------------ the bundled domain

def test_bundled_domain_sizes_and_disjointness():
    seeds, held = load_seeds(), load_heldout()
    assert len(seeds) == 64 and len(held) >= 100
    ids = [r["id"] for r in seeds + held]
    assert len(set(ids)) == len(ids)
    norm = lambda s: " ".join(s.lower().split())
    assert not {norm(r["question"]) for r in seeds} & {norm(r["question"]) for r in held}
    for r in seeds + held:
        assert set(r) == {"id", "question", "answer", "source", "evidence"}
        assert r["answer"].endswith(".") and r["answer"].count(". ") == 0, r  # one short sentence


def test_bundled_rows_are_checkable_against_the_docs():
    from hf_ext.common.data import pydocs_root

    try:
        pydocs_root()
    except FileNotFoundError:
        pytest.skip("python3.11-doc not installed")
    missing = [r["id"] for r in load_seeds() + load_heldout() if not evidence_found(r)]
    assert missing == []


def test_doc_passages_prefix_signatures_and_skip_code():
    doc = (".. module:: math\n\n.. function:: sqrt(x)\n\n   Return the square root of *x* for any value.\n\n"
           "Example::\n\n   >>> import math\n   print(math.sqrt(4)) and more code here\n\n"
           "An ordinary paragraph of plain prose that is long enough to keep.\n")
    out = doc_passages([doc])
    assert out == ["math.sqrt(x): Return the square root of x for any value.",
                   "An ordinary paragraph of plain prose that is long enough to keep."]


# ------------------------------------------------------------------------------------------ retrieval

@pytest.mark.parametrize("kind", ["bm25", "embedding"])
def test_retrieval_ranks_a_near_duplicate_first(kind):
    query = "What does json.dumps do? It serializes an object to a JSON formatted string."
    corpus = [POOL[0], POOL[2], "json.dumps serializes an object into a JSON formatted string.", POOL[3]]
    assert Retriever(kind).rank(query, corpus)[0] == 2


def test_passage_quality_prefers_prose_and_rank_pool_drops_low_quality():
    code = "x = {1: 2}; y = [3, 4]; z = f(x) + g(y) * 5 - 6 // 7 ** 8 % 9 >> 10"
    assert passage_quality(POOL[0]) > 0.8 > passage_quality(code)
    assert passage_quality("") == 0.0
    order, scores = rank_pool(Retriever("bm25"), ["square root of a number"], [code] + POOL, min_quality=0.5)
    assert 0 not in order and order[0] == 1 and list(scores) == sorted(scores, reverse=True)


# ------------------------------------------------------------------------------------------ generation / filtering

def test_icl_prompt_holds_exactly_k_examples():
    seeds = load_seeds()
    for k in (1, 3, 5):
        p = icl_prompt(seeds[:k], passage=POOL[0])
        assert p.count("Question:") == k + 1 and p.count("Answer:") == k and p.endswith("Question:")
        assert all(s["question"] in p for s in seeds[:k]) and seeds[k]["question"] not in p
    q = icl_prompt(seeds[:2], question="What is x?")
    assert q.count("Answer:") == 3 and q.endswith("Question: What is x?\nAnswer:")
    with pytest.raises(ValueError, match="not both"):
        icl_prompt(seeds[:2], passage="p", question="q")


def test_generation_stops_each_sequence_at_its_stop_string():
    from hf_ext.alignment import generate
    from hf_ext.common.models import tiny_model

    model, tok = tiny_model("llama")
    prompts = ["The quick brown", "A function"]
    free = generate(model, tok, prompts, max_new_tokens=30, temperature=1.0, seed=5, progress=False)
    stopped = generate(model, tok, prompts, max_new_tokens=30, temperature=1.0, seed=5, progress=False, stop=["e"])
    for f, s in zip(free, stopped):
        cut = f.index("e") if "e" in f else None
        assert s == (f if cut is None else s) and f.startswith(s) and (cut is None or "e" in s[-6:])
    assert any(len(s) < len(f) for f, s in zip(free, stopped))


def test_parse_sample():
    assert parse_sample(" What does x do?\nAnswer: x does y.\nQuestion: next") == ("What does x do?", "x does y.")
    assert parse_sample(" What does x do? Answer: x does y.") == ("What does x do?", "x does y.")
    assert parse_sample(" no answer marker here") is None


def test_filter_drops_duplicates_and_out_of_bound_lengths_counting_reasons():
    cands = [
        {"text": " What does json.dumps do?\nAnswer: json.dumps serializes obj to a JSON string."},  # dup of seed
        {"text": " What does math.sqrt do exactly?\nAnswer: math.sqrt returns the square root of x."},  # kept
        {"text": " What does math.sqrt do exactly?\nAnswer: it returns the square root of x."},  # dup in batch
        {"text": " Why?\nAnswer: because the docs say that it does."},  # question too short
        {"text": " What does os.getcwd return?\nAnswer: " + "word " * 80},  # answer too long
        {"text": " nothing to parse"},
        {"text": " A statement, not a question.\nAnswer: some answer here."},
    ]
    res = filter_samples(cands, existing_questions=["What does json.dumps do?"], question_words=(3, 20),
                         answer_words=(3, 30), max_rouge=0.7)
    assert isinstance(res, FilterResult)
    assert [k["question"] for k in res.kept] == ["What does math.sqrt do exactly?"]
    assert res.to_dict()["rejected"] == {"unparsable": 1, "not_a_question": 1, "question_length": 1, "answer_length": 1,
                                         "duplicate": 2, "low_quality": 0}
    low = filter_samples(cands[1:2], min_quality=0.5, quality_fn=lambda q, a, p: 0.1)
    assert low.kept == [] and low.rejected["low_quality"] == 1


# ------------------------------------------------------------------------------------------ scoring

def test_domain_scorer_and_bootstrap():
    from hf_ext.alignment import DomainScorer, score_all

    sc = DomainScorer(Retriever("embedding"))
    ref = "math.sqrt returns the square root of x."
    same, near, far = sc.score_many(["q"] * 3, [ref, "It returns the square root of x.", "The sky is blue today."],
                                    [ref] * 3)
    assert same == pytest.approx(1.0, abs=1e-4) and same > near > far >= 0.0
    assert score_all(lambda p, r, ref: float(len(r)), ["a", "b"], ["xy", "x"], [None, None]) == [2.0, 1.0]
    mean, lo, hi = bootstrap_ci([0.1, 0.2, 0.3, 0.9] * 5, n_boot=500)
    assert lo < mean < hi and mean == pytest.approx(0.375)
    with pytest.raises(ValueError):
        bootstrap_ci([])


def test_reward_model_scorer_through_a_pipeline():
    from transformers import LlamaConfig, LlamaForSequenceClassification, pipeline

    from hf_ext.alignment import RewardModelScorer
    from hf_ext.common.models import tiny_tokenizer

    tok = tiny_tokenizer()
    torch.manual_seed(0)
    rm = LlamaForSequenceClassification(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                                    num_hidden_layers=1, num_attention_heads=2, num_labels=1,
                                                    pad_token_id=0))
    scorer = RewardModelScorer(pipeline("text-classification", model=rm, tokenizer=tok))
    a, b = scorer.score_many(["q", "q"], ["a good answer", "another answer"])
    assert isinstance(a, float) and a != b and scorer("q", "a good answer", None) == pytest.approx(a, abs=1e-5)


# ------------------------------------------------------------------------------------------ config and bad input

def test_config_validation_and_round_trip(tmp_path):
    cfg = tiny_cfg(tmp_path)
    back = ISARAConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back.to_dict() == cfg.to_dict()
    assert ISARAConfig.from_dict({**cfg.to_dict(), "lora": None}).lora is None
    for bad, field in [({"iterations": 0}, "iterations"), ({"retriever": "tfidf"}, "retriever"),
                       ({"max_rouge": 1.5}, "max_rouge"), ({"answer_words": (9, 3)}, "answer_words"),
                       ({"icl_examples": 2.5}, "icl_examples"), ({"sft": 3}, "sft"),
                       ({"train_on": "all"}, "train_on")]:
        with pytest.raises(ValueError, match=field):
            ISARAConfig(**bad)
    with pytest.raises(ValueError, match="Unknown ISARAConfig keys"):
        ISARAConfig.from_dict({"iterationz": 2})


def test_bad_input_fails_before_any_training(tmp_path):
    cfg = tiny_cfg(tmp_path)
    seeds = load_seeds()[:3]
    model = object()  # never touched: every check runs before the model is used
    with pytest.raises(ValueError, match="seed_dataset is empty"):
        ISARATrainer(model, None, seed_dataset=[], pool=POOL, args=cfg)
    with pytest.raises(ValueError, match=r"seed_dataset row 1 lacks .*'answer'"):
        ISARATrainer(model, None, seed_dataset=[seeds[0], {"question": "q"}], pool=POOL, args=cfg)
    with pytest.raises(ValueError, match="icl_examples=4 exceeds the 3 labeled seed examples"):
        ISARATrainer(model, None, seed_dataset=seeds, pool=POOL, args=tiny_cfg(tmp_path, icl_examples=4))
    with pytest.raises(ValueError, match="icl_examples=9 exceeds"):  # more than seeds + pool, too
        ISARATrainer(model, None, seed_dataset=seeds, pool=POOL, args=tiny_cfg(tmp_path, icl_examples=9))
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(NotADirectoryError, match="cannot be created"):
        ISARATrainer(model, None, seed_dataset=seeds, pool=POOL, args=tiny_cfg(tmp_path, name="a_file/out"))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("user file")
    with pytest.raises(FileExistsError, match="not empty"):
        ISARATrainer(model, None, seed_dataset=seeds, pool=POOL, args=tiny_cfg(tmp_path, name="full"))
    with pytest.raises(ValueError, match="eval_dataset row 0"):
        ISARATrainer(model, None, seed_dataset=seeds, pool=POOL, args=cfg, eval_dataset=[{"answer": "a"}])
    with pytest.raises(ValueError, match="not non-empty strings"):
        ISARATrainer(model, None, seed_dataset=seeds, pool=["ok text", ""], args=cfg)


def test_unwritable_output_dir(tmp_path, monkeypatch):
    import tempfile as tf

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tf, "TemporaryFile", refuse)  # root ignores chmod, so simulate the refusal
    with pytest.raises(PermissionError, match="not writable"):
        ISARATrainer(object(), None, seed_dataset=load_seeds()[:3], pool=POOL, args=tiny_cfg(tmp_path))


# ------------------------------------------------------------------------------------------ end to end

def run_once(tmp_path, name, seed=0, **kw):
    from hf_ext.common.models import tiny_model

    model, tok = tiny_model("llama")
    cfg = tiny_cfg(tmp_path, name=name, seed=seed, **kw)
    tr = ISARATrainer(model, tok, seed_dataset=load_seeds()[:8], pool=POOL, args=cfg,
                      eval_dataset=load_heldout()[:4], scorer=lambda p, r, ref: float(len(r.split())))
    before = lora_weights(tr.model)
    tr.train()
    return tr, before


def test_one_full_iteration_changes_the_lora_weights_and_writes_the_report(tmp_path):
    tr, before = run_once(tmp_path, "run")
    after = lora_weights(tr.model)
    assert before and all(not torch.equal(before[n], after[n]) for n in before if "lora_B" in n)
    prompts = tr.build_prompts(3)
    assert all(p["prompt"].count("Answer:") == 2 for p in prompts)  # exactly k = 2 examples
    report = json.loads((tr.output_dir / "report.json").read_text())
    (it,) = report["iterations"]
    assert it["generated"] == 4 and it["kept"] + sum(it["rejected"].values()) == 4
    assert it["train_samples"] == 8 + it["kept"] and it["sft_loss"] > 0
    assert set(it["heldout"]) >= {"mean", "ci_low", "ci_high", "n"} and report["baseline_heldout"]["n"] == 4
    assert (tr.output_dir / "report.png").stat().st_size > 1000
    final = tr.save_model()
    assert (final / "adapter_model.safetensors").is_file() and (final / "adapter_config.json").is_file()


def test_kept_samples_enter_the_next_fine_tuning(tmp_path, monkeypatch):
    import hf_ext.alignment.isara_trainer as mod

    canned = [f" What does module{i}.function{i} compute here?\nAnswer: module{i}.function{i} computes value {i}."
              for i in range(4)]
    calls = []

    def fake_generate(model, tok, prompts, **kw):
        calls.append(len(prompts))
        start = sum(calls[:-1])
        return canned[start : start + len(prompts)]

    monkeypatch.setattr(mod, "generate", fake_generate)
    tr, _ = run_once(tmp_path, "canned", iterations=2, samples_per_iteration=2, min_quality=0.0)
    r1, r2 = tr.history
    assert (r1.kept, r2.kept) == (2, 2) and (r1.train_samples, r2.train_samples) == (10, 12)
    assert r2.rejected["duplicate"] == 0 and [s["iteration"] for s in tr.kept] == [1, 1, 2, 2]
    calls.clear()
    inc, _ = run_once(tmp_path, "canned_new", iterations=2, samples_per_iteration=2, min_quality=0.0, train_on="new")
    assert [r.train_samples for r in inc.history] == [10, 2]
    lines = (tr.output_dir / "samples_iter2.jsonl").read_text().splitlines()
    assert [json.loads(x)["question"] for x in lines] == ["What does module2.function2 compute here?",
                                                        "What does module3.function3 compute here?"]


def test_reproducible_with_a_seed(tmp_path):
    a, _ = run_once(tmp_path, "a", seed=3, temperature=1.0)
    b, _ = run_once(tmp_path, "b", seed=3, temperature=1.0)
    c, _ = run_once(tmp_path, "c", seed=4, temperature=1.0)
    wa, wb, wc = lora_weights(a.model), lora_weights(b.model), lora_weights(c.model)
    assert all(torch.equal(wa[n], wb[n]) for n in wa)
    assert not all(torch.equal(wa[n], wc[n]) for n in wa)
    gen = lambda tr: tr.generate_round(4, seed=11)
    assert [x["text"] for x in gen(a)] == [x["text"] for x in gen(b)]


# ------------------------------------------------------------------------------------------ CLI

def test_cli_align_checks_input_before_loading_the_model(tmp_path):
    from hf_ext.cli import build_parser

    bad = tmp_path / "seeds.jsonl"
    bad.write_text(json.dumps({"question": "q only"}) + "\n")
    args = build_parser().parse_args(["align", "--model", str(tmp_path / "no_such_model"), "--seeds", str(bad),
                                      "--pool", "none", "--out", str(tmp_path / "out")])
    with pytest.raises(ValueError, match="--seeds row 0 lacks"):
        args.func(args)


def test_cli_align_runs_one_iteration(tmp_path, capsys):
    from hf_ext.cli import build_parser
    from hf_ext.common.models import tiny_model

    model, tok = tiny_model("llama")
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    (tmp_path / "pool.txt").write_text("\n\n".join(POOL))
    args = build_parser().parse_args([
        "align", "--model", str(tmp_path / "m"), "--pool", str(tmp_path / "pool.txt"), "--out", str(tmp_path / "o"),
        "--iterations", "1", "--samples-per-iteration", "2", "--icl-examples", "2", "--retriever", "bm25",
        "--max-new-tokens", "6", "--max-steps", "1", "--eval-limit", "2"])
    assert args.func(args) == 0
    assert "| 1 | 2 |" in capsys.readouterr().out
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["iterations"][0]["generated"] == 2 and (tmp_path / "o" / "final" / "adapter_config.json").is_file()


@pytest.mark.slow  # reads and ranks the whole python-docs pool (about a minute on a loaded CPU)
def test_demo_row_runs_and_leaves_the_model_unchanged():
    from hf_ext.alignment.demo import demo_rows
    from hf_ext.common.data import pydocs_root
    from hf_ext.common.demo import DemoContext
    from hf_ext.common.models import tiny_model

    try:
        pydocs_root()
    except FileNotFoundError:
        pytest.skip("python3.11-doc not installed")
    model, tok = tiny_model("llama")
    names = sorted(n for n, _ in model.named_parameters())
    (row,) = demo_rows(model, tok, DemoContext())
    assert row.capability == "alignment" and 0.0 <= row.value <= 1.0 and 0.0 <= row.baseline <= 1.0
    assert sorted(n for n, _ in model.named_parameters()) == names  # the LoRA layers are gone again
