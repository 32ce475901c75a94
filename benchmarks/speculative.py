"""Speculative decoding on the default model (Gemma 3 270M) on this CPU: ours vs plain greedy vs transformers.

Run: .venv/bin/python benchmarks/speculative.py  (writes benchmarks/results/speculative.md)

Prompts: the first tokens of documents of the pydocs evaluation split (lengths drawn in [--min-prompt,
--max-prompt], so batches are left-padded). Every method decodes greedily, so every output must equal plain
greedy's; the table says whether it did. Methods:
  * plain greedy ``generate``;
  * transformers' assisted generation (``assistant_model=`` the same draft; batch 1 only, transformers refuses
    batch > 1) and transformers' prompt lookup (``prompt_lookup_num_tokens=10``);
  * ours (``custom_generate=hf_ext.speculative.generate``) with a fixed lookahead and with ``"auto"``.
Then the analytical model: alpha and the draft step latency estimated from the fixed-lookahead run, the target's
forward latency measured per size with ``profile_target``; predicted decode throughput for each lookahead against
a measured run at that lookahead (--sweep-tokens new tokens each, batch 1).
Every method gets a short untimed warm-up first (this also lets "auto" time the target once per batch size).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from hf_ext.common.data import load_text
from hf_ext.common.models import load_default_model
from hf_ext.common.utils import atomic_write_text
from hf_ext.speculative import (
    LatencyProfile,
    PromptLookupDrafter,
    SpeculativeStats,
    frequency_vocab,
    generate,
    plan_lookaheads,
    profile_target,
    shallow_self_draft,
)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import cpu_name  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "speculative.md"


def make_prompts(tokenizer, n: int, lo: int, hi: int, seed: int = 0) -> list[str]:
    docs = [d for d in load_text("pydocs", "eval") if len(d) > 4000]
    rng = random.Random(seed)
    picks = rng.sample(docs, n)
    out = []
    for doc in picks:
        ids = tokenizer(doc, add_special_tokens=False)["input_ids"][: rng.randint(lo, hi)]
        out.append(tokenizer.decode(ids))
    return out


def call(model, inputs, name, draft, la, stats, gen):
    if name == "plain greedy":
        return model.generate(**inputs, **gen)
    if name == "transformers assisted":
        return model.generate(**inputs, assistant_model=draft, **gen)
    if name == "transformers prompt lookup":
        return model.generate(**inputs, prompt_lookup_num_tokens=10, **gen)
    return model.generate(**inputs, custom_generate=generate, draft_model=draft,
                          num_draft_tokens=la if la == "auto" else int(la), speculative_stats=stats, **gen)


def timed(fn) -> tuple[object, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--min-prompt", type=int, default=100)
    ap.add_argument("--max-prompt", type=int, default=200)
    ap.add_argument("--draft-layers", type=int, default=18, help="blocks of the self-draft (18 = all)")
    ap.add_argument("--head-vocab", type=int, default=4096, help="frequency-ranked tokens in the draft's head")
    ap.add_argument("--lookahead", type=int, default=4, help="fixed lookahead of 'ours fixed'")
    ap.add_argument("--sweep", type=int, nargs="*", default=[2, 4, 8], help="lookaheads for predicted vs measured")
    ap.add_argument("--sweep-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared CPU)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    model, tok = load_default_model()
    tok.padding_side = "left"
    vocab = frequency_vocab(tok, load_text("pydocs", "calibration")[:60], args.head_vocab)
    self_draft = shallow_self_draft(model, args.draft_layers, vocab)
    self_name = f"self-draft {args.draft_layers}/{len(model.model.layers)} blocks, head {args.head_vocab}"
    lookup = PromptLookupDrafter(max_ngram=3)
    drafts = {self_name: self_draft, "prompt lookup (n<=3)": lookup}
    prompts = make_prompts(tok, max(args.batch_sizes), args.min_prompt, args.max_prompt)
    gen = dict(do_sample=False, max_new_tokens=args.new_tokens)
    rows, sweep_rows = [], []

    for bs in args.batch_sizes:
        inputs = tok(prompts[:bs], return_tensors="pt", padding=True)
        methods = [("plain greedy", "-", "-", None)]
        if bs == 1:
            methods.append(("transformers assisted", self_name, "heuristic (20)", None))
            methods.append(("transformers prompt lookup", "prompt lookup", "10", None))
        for dname in drafts:
            for la in (str(args.lookahead), "auto"):
                methods.append((f"ours {'auto' if la == 'auto' else 'fixed'}", dname, la, SpeculativeStats()))
        ref = None
        model.generate(**inputs, **dict(gen, max_new_tokens=4))
        for name, dname, la, st in methods:
            if st is not None:  # warm-up: lets "auto" time the target once for this batch size
                call(model, inputs, name, drafts.get(dname), la, None, dict(gen, max_new_tokens=4))
            draft = drafts.get(dname)
            out, secs = timed(lambda i=inputs, n=name, d=draft, la=la, st=st: call(model, i, n, d, la, st, gen))
            new = (out.shape[1] - inputs["input_ids"].shape[1]) * bs
            if ref is None:
                ref, base = out, new / secs
            row = dict(batch=bs, method=name, draft=dname, lookahead=la, tps=new / secs, speedup=new / secs / base,
                       tar=st.mean_accepted_length if st else None, row_tar=st.row_mean_accepted_length if st else None,
                       acc=st.acceptance if st else None, same=bool(torch.equal(out, ref)),
                       gammas=sorted(set(st.gammas)) if st and la == "auto" else None)
            rows.append(row)
            print(f"[{time.perf_counter() - started:6.0f}s] batch {bs} {name:28s} {dname:40s} la={la:>5s} "
                  f"{row['tps']:6.2f} tok/s  x{row['speedup']:.2f}  TAR={row['tar']}  same={row['same']}", flush=True)
            if name == "ours fixed" and bs == 1 and args.sweep:
                sweep_rows += sweep(model, inputs, drafts[dname], dname, st, args)

    write_results(args, rows, sweep_rows, time.perf_counter() - started)
    return 0


def sweep(model, inputs, draft, dname, probe: SpeculativeStats, args) -> list[dict]:
    """Predict decode throughput for each lookahead from the probe run, then measure it."""
    prof = profile_target(model, inputs["input_ids"], sizes=sorted({1, *(g + 1 for g in args.sweep)}))
    alpha = probe.acceptance
    draft_step = probe.draft_seconds / max(sum(probe.gammas), 1)
    # target_seconds includes the prefill, so the remainder is the per-iteration bookkeeping
    overhead = max(probe.seconds - probe.target_seconds - probe.draft_seconds, 0.0) / max(probe.iterations, 1)
    profile = LatencyProfile(target=prof.target, draft=draft_step, overhead=overhead)
    plans = {p.gamma: p for p in plan_lookaheads(alpha, profile, max(args.sweep))}
    out = []
    for g in args.sweep:
        st = SpeculativeStats()
        model.generate(**inputs, custom_generate=generate, draft_model=draft, num_draft_tokens=g,
                       speculative_stats=st, do_sample=False, max_new_tokens=args.sweep_tokens)
        meas = st.decode_tokens_per_second
        pred = plans[g].tokens_per_second
        out.append(dict(draft=dname, gamma=g, alpha=alpha, draft_ms=1e3 * draft_step,
                        target_ms=1e3 * prof.target_latency(g + 1), pred=pred, meas=meas, tar=st.mean_accepted_length,
                        pred_tar=plans[g].expected_tokens, err=100 * (pred - meas) / meas))
        print(f"  sweep {dname:40s} g={g}: predicted {pred:.2f} measured {meas:.2f} tok/s "
              f"(TAR {st.mean_accepted_length:.2f} vs E {plans[g].expected_tokens:.2f})", flush=True)
    return out


def _f(x, fmt="{:.2f}"):
    return "-" if x is None else fmt.format(x)


def write_results(args, rows, sweep_rows, seconds) -> None:
    cmd = ".venv/bin/python benchmarks/speculative.py " + " ".join(sys.argv[1:])
    lines = [
        "# Speculative decoding: Gemma 3 270M on this CPU",
        "",
        f"Command: `{cmd.strip()}`  ",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores, torch threads {args.threads}, load average at the end "
        f"{os.getloadavg()[0]:.1f} (shared with other jobs: absolute numbers are noisy, compare within a run)  ",
        f"Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; total benchmark time {seconds / 60:.1f} min  ",
        f"Setting: greedy, {args.new_tokens} new tokens, pydocs prompts of {args.min_prompt}-{args.max_prompt} tokens "
        "(left-padded at batch > 1), one prompt per batch row; tokens/s counts new tokens of all rows.",
        "",
        "| batch | method | draft | lookahead | tokens/s | speedup vs greedy | tokens/iteration (TAR) | "
        "row TAR | acceptance | identical to greedy | lookaheads used |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['batch']} | {r['method']} | {r['draft']} | {r['lookahead']} | {r['tps']:.2f} | "
                     f"{r['speedup']:.2f} | {_f(r['tar'])} | {_f(r['row_tar'])} | {_f(r['acc'])} | "
                     f"{'yes' if r['same'] else 'NO'} | {r['gammas'] or '-'} |")
    lines += ["", "transformers' assisted generation refuses batch > 1, so it has no batch-4 row.", ""]
    if sweep_rows:
        lines += [
            f"## Analytical model: predicted vs measured decode throughput (batch 1, {args.sweep_tokens} new tokens)",
            "",
            "alpha and the draft step latency come from the fixed-lookahead run above; T_target(g) is measured per "
            "forward size; throughput = E(alpha, g) / (g T_draft + T_target(g+1) + overhead).",
            "",
            "| draft | lookahead | alpha | T_draft ms | T_target(g+1) ms | predicted E | measured TAR | "
            "predicted tok/s | measured tok/s | error % |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for s in sweep_rows:
            lines.append(f"| {s['draft']} | {s['gamma']} | {s['alpha']:.3f} | {s['draft_ms']:.1f} | "
                         f"{s['target_ms']:.1f} | {s['pred_tar']:.2f} | {s['tar']:.2f} | {s['pred']:.2f} | "
                         f"{s['meas']:.2f} | {s['err']:+.1f} |")
        errs = [abs(s["err"]) for s in sweep_rows]
        lines += ["", f"Mean absolute prediction error: {sum(errs) / len(errs):.1f} %.", ""]
    text = "\n".join(lines) + "\n"
    atomic_write_text(args.out, text)
    print("\n" + text)


if __name__ == "__main__":
    sys.exit(main())
