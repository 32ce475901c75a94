"""Speculative decoding on the default model (Gemma 3 270M): trained shallow EAGLE-style drafts vs plain greedy vs
transformers, with the analytical model's prediction error per draft.

    .venv/bin/python benchmarks/speculative.py            # published: writes benchmarks/results/speculative.md + .png
    .venv/bin/python benchmarks/speculative.py --smoke    # tiny models, about a minute, writes benchmarks/out/

One invocation:
1. trains (or loads from ``benchmarks/out/``) EAGLE-style drafts of ``--layers`` decoder layers on the target's
   features over the pydocs *calibration* split (training budget: ``--train-samples`` windows of ``--seqlen``
   tokens, ``--train-steps`` steps each; the target's features are computed once and shared);
2. runs ``--rounds`` interleaved rounds (method order rotated per round) on prompts from the pydocs *eval* split,
   which the drafts never saw, ``--new-tokens`` new tokens, greedy: plain greedy; transformers' assisted generation
   with the untrained self-draft at our fixed lookahead and at its default schedule (an EAGLE draft reads the
   target's features, which transformers' assistant interface cannot give it); transformers' prompt lookup; ours
   with every draft at fixed and ``"auto"`` lookahead. Every greedy output is checked identical to plain greedy;
3. fits the analytical model per draft on the other rounds (leave one round out: acceptance, draft step, overhead)
   and predicts each round's decode-only throughput at the fixed lookahead: the error is out of sample;
4. plots speedup vs acceptance (the paper's question: is the fastest draft the one with the highest acceptance?).
``--batch-sizes 1 4`` and ``--sampling`` add batch-4 and sampled rows when the time budget allows.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's hf_ext
from _report import RESULTS_DIR, table, write_section  # noqa: E402

from hf_ext.common.data import load_text  # noqa: E402
from hf_ext.common.plots import new_figure, save_figure  # noqa: E402
from hf_ext.common.utils import atomic_write_text  # noqa: E402
from hf_ext.speculative import (  # noqa: E402
    EagleDraftModel,
    EagleTrainingConfig,
    LatencyProfile,
    PromptLookupDrafter,
    SpeculativeStats,
    frequency_vocab,
    generate,
    predicted_throughput_mix,
    profile_target,
    shallow_self_draft,
    train_eagle_draft,
)
from hf_ext.speculative.eagle_train import prepare_features  # noqa: E402
from hf_ext.speculative.select import fit_acceptance  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
SMOKE_TEXT = ("the model reads a token and predicts the next one while the cache keeps keys and values so that "
              "decoding runs fast on small machines and large ones alike. ")


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny models end to end (results in benchmarks/out/)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--prompt-tokens", type=int, default=160, help="prompt length in tokens")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1])
    ap.add_argument("--sampling", action="store_true", help="also sampled rows (temperature 0.7, top-k 50)")
    ap.add_argument("--layers", type=int, nargs="+", default=[1, 2], help="EAGLE draft depths to train / load")
    ap.add_argument("--draft-vocab", type=int, default=8192)
    ap.add_argument("--train-samples", type=int, default=64)
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--train-steps", type=int, default=48)
    ap.add_argument("--train-batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--unroll", type=int, default=1, help="draft training passes per batch (training-time test)")
    ap.add_argument("--self-layers", type=int, default=4, help="depth of the untrained self-draft row")
    ap.add_argument("--lookahead", type=int, default=4, help="fixed lookahead of the 'fixed' rows")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--results-name", default="speculative")
    args = ap.parse_args(argv)
    if args.smoke:
        args.rounds, args.new_tokens, args.prompt_tokens = 3, 24, 24
        args.layers, args.draft_vocab, args.train_samples, args.seqlen = [1, 2], 120, 8, 48
        args.train_steps, args.train_batch, args.lr, args.self_layers = 20, 4, 3e-3, 1
    return args


def load_target(args):
    if args.smoke:
        from hf_ext.common.models import tiny_model

        model, tok = tiny_model("gemma", seed=0)
        data = Path(tempfile.mkdtemp(prefix="spec_bench_"))
        for i in range(8):
            words = SMOKE_TEXT.split()
            random.Random(i).shuffle(words)
            (data / f"doc{i}.txt").write_text(SMOKE_TEXT * 3 + " ".join(words) * 6 + "\n")
        return model, tok, str(data), "tiny-gemma"
    from hf_ext.common.models import load_default_model

    model, tok = load_default_model()
    return model.to(args.device), tok, "pydocs", "google/gemma-3-270m"


def get_drafts(model, tok, data, target_name, args) -> tuple[dict, dict]:
    """EAGLE drafts by depth: loaded from benchmarks/out/ when trained before with the same budget, else trained."""
    base = dict(draft_vocab_size=args.draft_vocab, data=data, n_samples=args.train_samples, seqlen=args.seqlen,
                max_steps=args.train_steps, batch_size=args.train_batch, learning_rate=args.lr,
                unroll=args.unroll)
    drafts, info, features = {}, {}, None
    for layers in args.layers:
        cfg = EagleTrainingConfig(num_layers=layers, **base)
        tag = "smoke" if args.smoke else "gemma3-270m"
        unroll = f"-u{args.unroll}" if args.unroll > 1 else ""
        folder = OUT / (f"eagle-{tag}-{layers}L-v{args.draft_vocab}-n{args.train_samples}x{args.seqlen}-s"
                        f"{args.train_steps}{unroll}")
        log_file = folder / "training_log.json"
        if (folder / "config.json").is_file() and log_file.is_file():
            draft = EagleDraftModel.from_pretrained(folder).to(model.device).eval()
            log = json.loads(log_file.read_text())
            info[layers] = dict(folder=folder, loaded=True, **{k: log[k] for k in ("feature_seconds", "train_seconds")},
                                loss=(log["losses"][0][1], log["losses"][-1][1]))
        else:
            if features is None:
                features = prepare_features(model, tok, cfg)
            res = train_eagle_draft(model, tok, cfg, target_name=target_name, output_dir=str(folder), overwrite=True,
                                    features=features)
            draft = res.draft
            info[layers] = dict(folder=folder, loaded=False, feature_seconds=res.feature_seconds,
                                train_seconds=res.train_seconds, loss=(res.losses[0][1], res.losses[-1][1]))
        print(f"draft {layers}L: {'loaded' if info[layers]['loaded'] else 'trained'} ({folder.name}), "
              f"loss {info[layers]['loss'][0]:.3f} -> {info[layers]['loss'][1]:.3f}", flush=True)
        drafts[f"eagle {layers}L"] = draft
    return drafts, info


def make_prompts(tok, n: int, length: int, smoke: bool) -> list[torch.Tensor]:
    docs = [SMOKE_TEXT * 4] * n if smoke else [d for d in load_text("pydocs", "eval") if len(d) > 6000]
    rng = random.Random(0)
    picks = rng.sample(docs, n) if not smoke else docs
    out = []
    for i, doc in enumerate(picks):
        ids = tok(doc, return_tensors="pt").input_ids[0]
        start = 0 if smoke else rng.randint(0, max(len(ids) - length - 1, 0))
        out.append(torch.cat([ids[:1], ids[start + 1 + i % 3:start + length + i % 3]]))  # BOS + a window
    return out


def batch_inputs(prompts, bs, r, device):
    rows = [prompts[(r * bs + k) % len(prompts)] for k in range(bs)]
    width = max(len(x) for x in rows)
    ids = torch.zeros(bs, width, dtype=torch.long)
    mask = torch.zeros(bs, width, dtype=torch.long)
    for k, x in enumerate(rows):
        ids[k, width - len(x):], mask[k, width - len(x):] = x, 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


def methods_for(bs, drafts, args):
    la = args.lookahead
    out = [("plain greedy", None, None)]
    if bs == 1:  # transformers' assisted generation refuses batch > 1
        out += [("transformers assisted", "self", ("constant", la)), ("transformers assisted", "self", "default"),
                ("transformers prompt lookup", None, 10)]
    out += [(f"ours {'auto' if g == 'auto' else 'fixed'}", d, g) for d in drafts for g in (la, "auto")]
    return out


def run(model, inputs, method, draft, setting, gen, stats):
    if method == "plain greedy":
        return model.generate(**inputs, **gen)
    if method == "transformers assisted":
        kw = {} if setting == "default" else dict(num_assistant_tokens=setting[1],
                                                  num_assistant_tokens_schedule=setting[0])
        return model.generate(**inputs, assistant_model=draft, **kw, **gen)
    if method == "transformers prompt lookup":
        return model.generate(**inputs, prompt_lookup_num_tokens=setting, **gen)
    return model.generate(**inputs, custom_generate=generate, draft_model=draft, num_draft_tokens=setting,
                          speculative_stats=stats, **gen)


def label(method, dname, setting):
    if method == "plain greedy":
        return method
    if method == "transformers prompt lookup":
        return f"{method} | - | {setting} tokens"
    s = "default schedule" if setting == "default" else f"la {setting[1]}" if isinstance(setting, tuple) else \
        f"la {setting}"
    return f"{method} | {dname} | {s}"


def measure(model, drafts, prompts, args, do_sample: bool, bs: int) -> list[dict]:
    gen = dict(do_sample=do_sample, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)
    if do_sample:
        gen.update(temperature=0.7, top_k=50)
    methods = methods_for(bs, drafts, args)
    warm = batch_inputs(prompts, bs, 0, model.device)
    for method, dname, setting in methods:  # untrained warm-up; lets "auto" time the target for this batch size
        run(model, warm, method, drafts.get(dname), setting, dict(gen, max_new_tokens=6, min_new_tokens=6), None)
    records = []
    for r in range(args.rounds):
        inputs = batch_inputs(prompts, bs, r, model.device)
        prof = profile_target(model, inputs["input_ids"], sizes=sorted({1, 2, args.lookahead + 1, 8, 17}),
                              attention_mask=inputs["attention_mask"]) if not do_sample else None
        order = methods[r % len(methods):] + methods[:r % len(methods)]
        outs = {}
        for method, dname, setting in order:
            st = SpeculativeStats() if method.startswith("ours") else None
            if do_sample:
                torch.manual_seed(1000 + r)
            t0 = time.perf_counter()
            out = run(model, inputs, method, drafts.get(dname), setting, gen, st)
            secs = time.perf_counter() - t0
            outs[(method, dname, str(setting))] = out
            records.append(dict(round=r, batch=bs, sampling=do_sample, method=method, draft=dname, setting=setting,
                                tps=bs * (out.shape[1] - inputs["input_ids"].shape[1]) / secs, stats=st, profile=prof,
                                label=label(method, dname, setting)))
        ref = outs[("plain greedy", None, "None")]
        for rec in records[-len(order):]:
            rec["same"] = None if do_sample else bool(torch.equal(outs[(rec["method"], rec["draft"],
                                                                        str(rec["setting"]))], ref))
            rec["speedup"] = rec["tps"] / next(x["tps"] for x in records[-len(order):]
                                               if x["method"] == "plain greedy")
        print(f"round {r + 1}/{args.rounds} batch {bs} {'sampling' if do_sample else 'greedy'}: " + ", ".join(
            f"{x['label']} {x['tps']:.1f}" for x in records[-len(order):]), flush=True)
    return records


def predict_errors(records, args) -> list[dict]:
    """Leave-one-round-out: fit acceptance / draft step / overhead on the other rounds, predict this one."""
    rows = []
    fixed = [r for r in records if r["method"] == "ours fixed" and not r["sampling"] and r["batch"] == 1]
    for dname in dict.fromkeys(r["draft"] for r in fixed):
        runs = [r for r in fixed if r["draft"] == dname]
        errs = []
        for held in runs:
            rest = [r["stats"] for r in runs if r is not held]
            if not rest:
                continue
            positional = dname == "prompt lookup"
            alpha = fit_acceptance(rest, positional)
            steps = [t for st in rest for t in st.draft_step_seconds]
            profile = LatencyProfile(target=dict(held["profile"].target), draft=sum(steps) / max(len(steps), 1),
                                     overhead=statistics.mean(st.overhead for st in rest))
            # lookaheads as proposed in the other rounds (prompt lookup proposes only as far as its match goes)
            gammas = [g for st in rest for g in st.gammas]
            pred = predicted_throughput_mix(alpha, gammas, profile.draft, profile)
            meas = held["stats"].decode_tokens_per_second
            errs.append(100 * (pred - meas) / meas)
        if errs:
            st = [r["stats"] for r in runs]
            rows.append(dict(draft=dname, model="position" if dname == "prompt lookup" else "iid",
                             errors=errs, acceptance=statistics.median(s.acceptance for s in st),
                             draft_ms=1e3 * statistics.median(s.draft_step for s in st)))
    return rows


def summarize(records):
    groups = {}
    for r in records:
        groups.setdefault((r["batch"], r["sampling"], r["label"]), []).append(r)
    out = []
    for (bs, samp, lab), rs in groups.items():
        sp = [r["speedup"] for r in rs]
        tps = [r["tps"] for r in rs]
        st = [r["stats"] for r in rs if r["stats"] is not None]
        out.append(dict(batch=bs, sampling=samp, label=lab, draft=rs[0]["draft"], method=rs[0]["method"],
                        tps=statistics.median(tps), tps_lo=min(tps), tps_hi=max(tps), speedup=statistics.median(sp),
                        sp_lo=min(sp), sp_hi=max(sp),
                        acc=statistics.median(s.acceptance for s in st) if st else None,
                        tar=statistics.median(s.mean_accepted_length for s in st) if st else None,
                        gammas=sorted({g for s in st for g in s.gammas}) if st and "auto" in lab else None,
                        same=None if samp else all(r["same"] for r in rs)))
    return out


def plot(summary, path):
    fig, ax = new_figure(6.4, 4.0)
    pts = [s for s in summary if s["method"] == "ours fixed" and s["batch"] == 1 and not s["sampling"]]
    for s in pts:
        ax.errorbar(s["acc"], s["speedup"], yerr=[[s["speedup"] - s["sp_lo"]], [s["sp_hi"] - s["speedup"]]],
                    fmt="o", capsize=3)
        ax.annotate(s["draft"], (s["acc"], s["speedup"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.axhline(1.0, color="gray", lw=0.8, ls="--")
    ax.set_xlabel("per-token acceptance (median over rounds)")
    ax.set_ylabel("speedup vs plain greedy (median, min-max)")
    ax.set_title("Throughput vs acceptance, batch 1, fixed lookahead")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def report(args, summary, errors, info, seconds, png) -> str:
    rows = [[s["batch"], "sampling" if s["sampling"] else "greedy", s["label"], f"{s['tps']:.2f}",
             f"{s['tps_lo']:.2f}-{s['tps_hi']:.2f}", f"{s['speedup']:.2f}", f"{s['sp_lo']:.2f}-{s['sp_hi']:.2f}",
             "-" if s["acc"] is None else f"{s['acc']:.3f}", "-" if s["tar"] is None else f"{s['tar']:.2f}",
             "-" if s["same"] is None else ("yes" if s["same"] else "NO"), s["gammas"] or "-"] for s in summary]
    header = ["batch", "decoding", "method / draft / lookahead", "tokens/s (median)", "min-max", "speedup", "min-max",
              "acceptance", "TAR", "identical to greedy", "lookaheads used"]
    train = [[f"eagle {k}L", "loaded" if v["loaded"] else "trained", f"{v['feature_seconds']:.0f}",
              f"{v['train_seconds']:.0f}", f"{v['loss'][0]:.3f} -> {v['loss'][1]:.3f}"] for k, v in info.items()]
    err_rows = [[e["draft"], e["model"], f"{e['acceptance']:.3f}", f"{e['draft_ms']:.1f}",
                 ", ".join(f"{x:+.1f}" for x in e["errors"]), f"{statistics.median(abs(x) for x in e['errors']):.1f}"]
                for e in errors]
    best = max((s for s in summary if s["batch"] == 1 and not s["sampling"]), key=lambda s: s["speedup"])
    g1 = [s for s in summary if s["method"] == "ours fixed" and s["batch"] == 1 and not s["sampling"]]
    top_acc = max(g1, key=lambda s: s["acc"] or 0) if g1 else None
    fastest = max(g1, key=lambda s: s["speedup"]) if g1 else None
    all_same = all(s["same"] in (None, True) for s in summary)
    eagle = [s for s in summary if (s["draft"] or "").startswith("eagle") and s["batch"] == 1 and not s["sampling"]]
    best_eagle = max(eagle, key=lambda s: s["speedup"]) if eagle else None
    tf = [s for s in summary if s["method"] == "transformers assisted"]
    findings = [
        f"- Every greedy output identical to plain greedy: {'yes' if all_same else 'NO'}.",
        f"- Fastest at batch 1: {best['label']} at {best['speedup']:.2f}x plain greedy (median of {args.rounds}).",
    ]
    if best_eagle:
        findings.append(f"- Best trained draft: {best_eagle['label']} {best_eagle['speedup']:.2f}x plain greedy "
                        f"(issue bar: 2.0x: {'met' if best_eagle['speedup'] >= 2.0 else 'not met'}).")
        if tf:
            best_tf = max(tf, key=lambda s: s["tps"])
            findings.append(f"- vs transformers' best assisted row ({best_tf['label']}): "
                            f"{best_eagle['tps'] / best_tf['tps']:.2f}x (transformers cannot run the EAGLE draft: "
                            "it has no way to hand the target's features to an assistant).")
    if top_acc and fastest:
        findings.append(f"- Highest acceptance: {top_acc['draft']} ({top_acc['acc']:.3f}); fastest: "
                        f"{fastest['draft']} ({fastest['speedup']:.2f}x): the fastest draft "
                        f"{'is' if top_acc is fastest else 'is not'} the one with the highest acceptance.")
    if errors:
        worst = max(statistics.median(abs(x) for x in e["errors"]) for e in errors)
        findings.append(f"- Analytical model, out of sample (leave one round out): worst per-draft median |error| "
                        f"{worst:.1f} % (issue bar 10 %: {'met' if worst <= 10 else 'not met'}).")
    return "\n".join([
        f"Target: {'tiny Gemma (smoke)' if args.smoke else 'Gemma 3 270M'}, device {args.device}, torch threads "
        f"{args.threads}; {args.new_tokens} new tokens, prompts of {args.prompt_tokens} tokens from the pydocs eval "
        f"split (the drafts trained on the calibration split); {args.rounds} interleaved rounds, a new prompt per "
        f"round; fixed lookahead {args.lookahead}; total time {seconds / 60:.1f} min.",
        "",
        f"### Drafts (training budget: {args.train_samples} windows x {args.seqlen} tokens, {args.train_steps} steps "
        f"of {args.train_batch} windows, lr {args.lr}, draft vocabulary {args.draft_vocab})", "",
        table(["draft", "", "feature s", "train s", "loss"], train), "",
        "### Throughput", "", table(header, rows), "",
        "### Analytical model error per draft (decode-only, batch 1, fixed lookahead)", "",
        "Fitted on the other rounds (acceptance i.i.d., or by position for prompt lookup; draft step without the "
        "prompt catch-up; per-iteration overhead), T_target measured per forward size on the held-out prompt.", "",
        table(["draft", "acceptance model", "acceptance", "draft step ms", "error % per held-out round",
               "median abs %"], err_rows), "",
        "### Findings (computed from the rows above)", "", *findings, "", f"![throughput vs acceptance]({png.name})",
    ])


def main(argv=None) -> int:
    args = parse(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("No CUDA device: running on the CPU instead.")
        args.device = "cpu"
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    model, tok, data, target_name = load_target(args)
    drafts, info = get_drafts(model, tok, data, target_name, args)
    head = frequency_vocab(tok, load_text(data, "calibration")[:400], min(args.draft_vocab, len(tok)))
    drafts["self"] = shallow_self_draft(model, args.self_layers, head)
    drafts["prompt lookup"] = PromptLookupDrafter(max_ngram=3)
    prompts = make_prompts(tok, max(args.rounds * max(args.batch_sizes), 4), args.prompt_tokens, args.smoke)
    records = []
    for bs in args.batch_sizes:
        records += measure(model, drafts, prompts, args, False, bs)
        if args.sampling:
            records += measure(model, drafts, prompts, args, True, bs)
    summary = summarize(records)
    errors = predict_errors(records, args)
    out_dir = OUT if args.smoke else RESULTS_DIR
    png = plot(summary, out_dir / f"{args.results_name}{'_smoke' if args.smoke else ''}.png")
    body = report(args, summary, errors, info, time.perf_counter() - started, png)
    title = "Speculative decoding: trained shallow drafts vs plain greedy and transformers"
    if args.smoke:
        path = OUT / f"{args.results_name}_smoke.md"
        atomic_write_text(path, f"## {title} (smoke)\n\n{body}\n")
    else:
        path = write_section(args.results_name, title, body, packages=("accelerate",))
    print(f"\n{body}\n\nwrote {path} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
