"""ISARA benchmark: held-out score of the base model, SFT on the seeds, ICL-kNN, ISARA after 1 / 2 / 3 rounds and
one ISARA round with the same total sample budget, on the bundled Python-stdlib QA domain.

All conditions start from the same base model (a deep copy each) and share the 64 bundled seeds, the held-out
questions (the first ``--heldout`` of the bundled 105, never trained on), the ranked pool of doc passages (ranked
once; the one-round run consumes exactly the passages the three rounds consume) and the scorer (0.5 ROUGE-L F1 +
0.5 all-MiniLM-L6-v2 cosine against the reference answer, greedy answers). Scores: mean with a 95% percentile
bootstrap CI; differences: paired bootstrap over the same questions. Wall time: each condition's own seconds,
evaluation included.

The CPU default is sized for ~13 minutes on the idle 2-core machine with Gemma 3 270M: 32 generations per round
(96 in all), 2 in-context examples, all 105 held-out questions, 1 SFT epoch (batch 4), one seed (``--rounds 1``).
Every condition starts from the base model with a fresh adapter (same init seed) and trains on each example once
(``train_on="new"``: round 1 on the seeds + its kept samples, later rounds on their new samples only), so (d) after
three rounds and (e) see the same kinds of rows the same number of times and differ only in whether the generator
was updated between rounds; (b) is the seeds alone. The last column counts held-out answers that differ from (b)'s:
it shows whether a few self-generated rows changed the model's greedy answers at all. (An earlier run with 4
generations per round and a warm start from (b) changed none: one or two LoRA steps do not move greedy argmaxes.)
``--device cuda`` switches to the prepared GPU budgets (128 generations per round, 4 in-context examples, all 105
held-out questions, 2 epochs, 3 seeds).

    .venv/bin/python benchmarks/isara.py --smoke           # tiny random model, < 2 minutes, to benchmarks/out/
    .venv/bin/python benchmarks/isara.py                   # the published CPU measurement
    .venv/bin/python benchmarks/isara.py --device cuda     # larger budgets on a GPU
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from _report import RESULTS_DIR, table, write_section  # noqa: E402

from hf_ext.alignment import (  # noqa: E402
    DomainScorer,
    ISARAConfig,
    ISARATrainer,
    Retriever,
    evaluate_qa,
    load_heldout,
    load_pool,
    load_seeds,
    paired_bootstrap_diff,
)
from hf_ext.alignment.isara_config import default_sft_config  # noqa: E402

TRAIN_ON_WORDS = {"new": "the seeds + round-1 samples, then only each round's new samples (each example once)",
                  "new_only": "only that round's new samples, starting from the SFT-on-seeds adapter of (b) "
                              "(warm start: each example trained on once)",
                  "seeds+kept": "the seeds + every sample kept so far", "kept": "every sample kept so far"}
PROFILES = {
    "cpu": dict(samples=32, iterations=3, heldout=105, icl=2, max_new_tokens=40, eval_max_new_tokens=16, epochs=1.0,
                prefilter=300, gen_batch=8, eval_batch=15, rounds=1, train_on="new", warm_start=False, batch=4),
    "cuda": dict(samples=128, iterations=3, heldout=105, icl=4, max_new_tokens=64, eval_max_new_tokens=32,
                 epochs=2.0, prefilter=2000, gen_batch=64, eval_batch=64, rounds=3, train_on="new",
                 warm_start=False, batch=8),
    "smoke": dict(samples=2, iterations=3, heldout=4, icl=2, max_new_tokens=8, eval_max_new_tokens=4, epochs=1.0,
                  prefilter=40, gen_batch=4, eval_batch=4, rounds=1, train_on="new", warm_start=False, batch=4),
}


def load_base(args):
    import torch

    if args.smoke:
        from hf_ext.common.models import tiny_model

        return tiny_model("llama")
    from hf_ext.common.models import load_model

    model, tok = load_model(args.model)
    return model.to(torch.device(args.device)), tok


def config(args, p, out: str, seed: int) -> ISARAConfig:
    sft = default_sft_config()
    sft.num_train_epochs, sft.per_device_train_batch_size, sft.seed = p["epochs"], p["batch"], seed
    sft.logging_steps = 1000
    if args.smoke:
        sft.max_steps = 2
    return ISARAConfig(output_dir=out, iterations=p["iterations"], samples_per_iteration=p["samples"],
                       icl_examples=p["icl"], max_new_tokens=p["max_new_tokens"],
                       eval_max_new_tokens=p["eval_max_new_tokens"], pool_prefilter=p["prefilter"],
                       generation_batch_size=p["gen_batch"], eval_batch_size=p["eval_batch"], seed=seed,
                       max_prompt_tokens=160 if args.smoke else 768, sft=sft, train_on=p["train_on"],
                       pool_min_quality=0.3 if args.smoke else 0.5)


def one_round(args, p, base, tok, seeds, heldout, pool, retriever, scorer, seed: int, work: Path) -> dict:
    """Every condition once with ``seed``; returns {condition: {"eval": EvalResult-dict, "seconds": s, ...}}."""
    res: dict[str, dict] = {}
    ev = lambda m, **kw: evaluate_qa(m, tok, heldout, scorer, max_new_tokens=p["eval_max_new_tokens"],  # noqa: E731
                                     batch_size=p["eval_batch"], seed=seed, progress=False, **kw)
    t = time.perf_counter()
    res["(a) base model"] = {"eval": ev(base)}
    res["(a) base model"]["seconds"] = time.perf_counter() - t

    t = time.perf_counter()
    tr = ISARATrainer(copy.deepcopy(base), tok, seed_dataset=seeds, pool=pool,
                      args=config(args, p, str(work / f"seeds_{seed}"), seed), eval_dataset=heldout, scorer=scorer,
                      retriever=retriever)
    loss = tr.fine_tune(seeds, "seeds_only")
    res["(b) SFT on seeds"] = {"eval": tr.evaluate(), "sft_loss": loss, "seconds": time.perf_counter() - t}
    start = tr.model if p["warm_start"] else base  # warm start: rounds add self-generated data to (b)'s adapter
    del tr

    t = time.perf_counter()
    res["(c) ICL-kNN"] = {"eval": ev(base, icl_bank=seeds, k=p["icl"], retriever=retriever)}
    res["(c) ICL-kNN"]["seconds"] = time.perf_counter() - t

    t = time.perf_counter()
    isara = ISARATrainer(copy.deepcopy(start), tok, seed_dataset=seeds, pool=pool,
                         args=config(args, p, str(work / f"isara_{seed}"), seed), eval_dataset=heldout,
                         scorer=scorer, retriever=retriever)
    isara.baseline = res["(b) SFT on seeds" if p["warm_start"] else "(a) base model"]["eval"]  # not scored twice
    anchors = isara.anchors()
    rank_s = time.perf_counter() - t
    for it in range(1, p["iterations"] + 1):
        r = isara.step(it)
        res[f"(d) ISARA, {it} iteration{'s' * (it > 1)}"] = {
            "eval": isara.last_eval, "kept": r.kept, "generated": r.generated, "rejected": r.rejected,
            "sft_loss": r.sft_loss, "seconds": time.perf_counter() - t}
    res["(d) ISARA, 1 iteration"]["rank_seconds"] = rank_s
    isara.save_model(work / f"isara_{seed}" / "final")
    del isara

    t = time.perf_counter()
    once = ISARATrainer(copy.deepcopy(start), tok, seed_dataset=seeds, pool=pool,
                        args=config(args, p, str(work / f"once_{seed}"), seed), eval_dataset=heldout, scorer=scorer,
                        retriever=retriever)
    once.use_anchors(anchors)
    r = once.step(1, n=p["samples"] * p["iterations"], offset=0)
    res[f"(e) one round, {p['samples'] * p['iterations']} samples"] = {
        "eval": once.last_eval, "kept": r.kept, "generated": r.generated, "rejected": r.rejected,
        "sft_loss": r.sft_loss, "seconds": time.perf_counter() - t}
    for v in res.values():
        e = v["eval"]
        v["eval"] = e.to_dict(per_question=True)
    return res


def summarize(rounds: list[dict], p: dict) -> tuple[str, list[str], dict]:
    names = list(rounds[0])
    rows = []
    ref = rounds[0]["(b) SFT on seeds"]["eval"]["responses"]
    for n in names:
        means = [r[n]["eval"]["mean"] for r in rounds]
        first = rounds[0][n]
        e = first["eval"]
        kept = f"{first['kept']} / {first['generated']}" if "kept" in first else "-"
        loss = f"{first['sft_loss']:.3f}" if first.get("sft_loss") is not None else "-"
        spread = f" (seeds: median {statistics.median(means):.4f}, {min(means):.4f}-{max(means):.4f})" \
            if len(rounds) > 1 else ""
        changed = sum(a != b for a, b in zip(e["responses"], ref))  # did the condition change any answer at all?
        rows.append([n, f"{e['mean']:.4f} [{e['ci_low']:.4f}, {e['ci_high']:.4f}]{spread}", kept, loss,
                     f"{changed} / {len(ref)}",
                     f"{statistics.median(r[n]['seconds'] for r in rounds):.0f}"])
    body = table(["condition", "held-out score, 95% CI (first seed)", "kept / generated", "SFT loss",
                  "answers differing from (b)",
                  "wall s (median; (d) cumulative, pool ranking included)"], rows)
    last = [n for n in names if n.startswith("(d)")][-1]
    once = next(n for n in names if n.startswith("(e)"))
    findings, diffs = [], {}
    for other in ("(a) base model", "(b) SFT on seeds", "(c) ICL-kNN", once):
        d = [paired_bootstrap_diff(r[last]["eval"]["scores"], r[other]["eval"]["scores"], seed=i)
             for i, r in enumerate(rounds)]
        diffs[other] = d
        m, lo, hi = d[0]
        verdict = "better" if lo > 0 else "worse" if hi < 0 else "not distinguishable (CI spans 0)"
        findings.append(f"- {last} vs {other}: {m:+.4f} [{lo:+.4f}, {hi:+.4f}] (paired bootstrap, first seed): "
                        f"{verdict}" + (f"; better on {sum(x[0] > 0 for x in d)} of {len(d)} seeds" if len(d) > 1
                                        else ""))
    return body, findings, diffs


def plot(rounds: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rounds[0])
    e = [rounds[0][n]["eval"] for n in names]
    fig, ax = plt.subplots(figsize=(9, 3.8))
    ax.bar(range(len(names)), [x["mean"] for x in e],
           yerr=[[x["mean"] - x["ci_low"] for x in e], [x["ci_high"] - x["mean"] for x in e]], capsize=4,
           color=["grey", "tab:blue", "tab:orange"] + ["tab:green"] * (len(names) - 4) + ["tab:red"])
    ax.set_xticks(range(len(names)), [n.replace(", ", "\n") for n in names], fontsize=7)
    ax.set_ylabel("held-out score (95% CI)")
    ax.set_title("ISARA on the Python-stdlib QA domain")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny random model and budgets (numbers meaningless)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="cuda: the larger prepared budgets")
    ap.add_argument("--model", default="default", help="model path ('default': Gemma 3 270M)")
    ap.add_argument("--rounds", type=int, default=None, help="seeds to repeat everything with (profile default)")
    ap.add_argument("--name", default=None, help="results name (default isara, isara_cuda on --device cuda)")
    ap.add_argument("--out", default=None, help="folder for JSON / PNG (default: benchmarks/results, or "
                                                 "benchmarks/out with --smoke)")
    args = ap.parse_args()
    p = dict(PROFILES["smoke" if args.smoke else args.device])
    if args.rounds:
        p["rounds"] = args.rounds
    name = args.name or ("isara_smoke" if args.smoke else "isara" if args.device == "cpu" else "isara_cuda")
    out = Path(args.out) if args.out else (Path(__file__).parent / "out" if args.smoke else RESULTS_DIR)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    base, tok = load_base(args)
    seeds, heldout = load_seeds(), load_heldout()[: p["heldout"]]
    pool = load_pool()
    retriever = Retriever("embedding")
    scorer = DomainScorer(retriever)
    rounds = []
    with tempfile.TemporaryDirectory(prefix="hf_ext_isara_bench_") as work:
        for i in range(p["rounds"]):
            rounds.append(one_round(args, p, base, tok, seeds, heldout, pool, retriever, scorer, seed=i,
                                    work=Path(work)))
            print(f"[isara] seed {i} done at {time.perf_counter() - start:.0f} s", flush=True)
    body, findings, diffs = summarize(rounds, p)
    total = time.perf_counter() - start
    budget = (f"Budgets: {p['samples']} generations per round x {p['iterations']} rounds (one-round run: "
              f"{p['samples'] * p['iterations']}), {p['icl']} in-context examples, {len(heldout)} held-out questions "
              f"(greedy, {p['eval_max_new_tokens']} new tokens), {p['max_new_tokens']} new tokens per generated "
              f"sample, SFT {p['epochs']:g} epoch(s) per round on {TRAIN_ON_WORDS[p['train_on']]} (LoRA r 8), pool: "
              f"{len(pool)} doc passages, BM25 prefilter to {p['prefilter']}, {p['rounds']} seed(s). "
              f"Total wall time {total:.0f} s.")
    text = "\n".join([budget, "", body, "", "Findings (computed from the scores above):", *findings,
                      "", "![scores](isara.png)" if not args.smoke else ""])
    print(text)
    (out / f"{name}.json").write_text(json.dumps({"profile": p, "rounds": rounds, "total_seconds": total,
                                                  "paired_diffs_last_vs": diffs}, indent=1, default=str))
    plot(rounds, out / f"{name}.png")
    if not args.smoke and args.out is None:
        title = "ISARA self-alignment (Python-stdlib QA, Gemma 3 270M" + (", GPU)" if args.device == "cuda" else ")")
        print(write_section(name, title, text.replace("isara.png", f"{name}.png"),
                            packages=("trl", "peft", "sentence-transformers", "bm25s", "rouge-score")))


if __name__ == "__main__":
    main()
