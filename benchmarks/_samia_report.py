"""The SaMIA benchmark's results section: the table, the findings computed from it, and the per-text JSON."""

from __future__ import annotations

import os

import _report
import torch

from hf_ext.common.utils import atomic_write_json

HEADER = ["words", "method", "AUROC", "TPR@10%FPR", "AUROC - loss [95% CI]", "tokens generated (kept)",
          "ms / generated token", "s / 100 texts"]


def _gap_cell(rec: dict) -> str:
    if rec["method"] == "loss":
        return "0 (reference)"
    g = rec["gap"]
    return f"{g['difference']:+.3f} [{g['low']:+.3f}, {g['high']:+.3f}]"


def rows(records: list[dict]) -> list[list]:
    out = []
    for r in records:
        s = r["sampling"]
        tokens = f"{s['generated_tokens']:,} ({s['kept_tokens']:,})" if s else "-"
        ms = f"{1000 * s['seconds'] / s['generated_tokens']:.2f}" if s and s["generated_tokens"] else "-"
        out.append([r["words"], r["method"], r["auroc"], r["tpr_at_fpr"], _gap_cell(r), tokens, ms,
                    f"{r['s_per_100']:.1f}"])
    return out


def findings(records: list[dict], control: list[dict], n: int) -> list[str]:
    """Plain statements computed from the records (nothing here is typed in by hand)."""
    lines = []
    for m in ("samia", "samia_zlib", "zlib", "min_k", "min_k_plus_plus"):
        parts = []
        for r in (r for r in records if r["method"] == m):
            g = r["gap"]
            verdict = ("below loss" if g["high"] < 0 else "above loss" if g["low"] > 0
                       else "not distinguishable from loss")
            parts.append(f"{r['words']} words {g['difference']:+.3f} [{g['low']:+.3f}, {g['high']:+.3f}], {verdict}")
        if parts:
            lines.append(f"**{m} - loss AUROC** (95% paired bootstrap CI over the {n} + {n} texts): "
                         + "; ".join(parts) + ".")
    sam = [r for r in records if r["method"] == "samia"]
    if sam:
        cost = []
        for r in sam:
            s = r["sampling"]
            like = next(x for x in records if x["words"] == r["words"] and x["method"] == "loss")
            ms = 1000 * s["seconds"] / s["generated_tokens"] if s["generated_tokens"] else float("nan")
            cost.append(f"{r['words']} words: {s['generated_tokens'] / s['texts']:.0f} tokens generated per text "
                        f"({s['kept_tokens'] / s['texts']:.0f} kept), {ms:.2f} ms per generated token, "
                        f"{r['s_per_100'] / like['s_per_100']:.1f}x the loss attack's time")
        lines.append("**SaMIA's cost** (one sampling run shared by SaMIA and SaMIA*zlib): " + "; ".join(cost) + ".")
    if control:
        aurocs = [r["auroc"] for r in control]
        far = [f"{r['words']}/{r['method']} {r['auroc']:.3f}" for r in control if abs(r["auroc"] - 0.5) > 0.1]
        lines.append(f"**Control** (the same attacks before fine-tuning): AUROC {min(aurocs):.3f}-{max(aurocs):.3f}; "
                     + (f"further than 0.1 from 0.5: {', '.join(far)}." if far else "all within 0.1 of 0.5."))
    return ["- " + x for x in lines]


def report(args, records, control, info, train_losses, t_train, total, max_words, partial) -> None:
    """Write ``<out_dir>/<name>.md`` and ``.json`` (also after each length, so an interrupted run leaves what it
    measured)."""
    md = _report.table(HEADER, rows(records))
    if control:
        md += ("\n\nControl: the same attacks on the model before fine-tuning (no text is a member yet, so every "
               "AUROC should be near 0.5; a value far from it would reveal a difference between the two sets)."
               "\n\n" + _report.table(HEADER, rows(control)))
    gpu = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    load = os.getloadavg()[0]
    cpu_note = "" if args.device == "cuda" else (
        f" Load average when this was written: {load:.1f} on {os.cpu_count()} cores"
        + (" (shared CPU: times are upper bounds)." if load > 1.5 * (os.cpu_count() or 1) else "."))
    tiny = " [--tiny smoke test: numbers meaningless]" if args.tiny else ""
    partial_note = " PARTIAL: the run was still going when this was written." if partial else ""
    model = "tiny random Gemma" if args.tiny else "Gemma 3 270M"
    amp = "no autocast" if args.dtype == "float32" else f"{args.dtype} autocast"
    ft = (f"fully fine-tuned on the {args.n} member texts for {args.epochs} epochs (AdamW, lr {args.lr}, batch 1, "
          f"{amp}; mean train loss per epoch: {', '.join(f'{x:.3f}' for x in train_losses)}; "
          f"{t_train:.0f} s)" if args.epochs else "not fine-tuned (--epochs 0: a control run, no text is a member)")
    if "documents_per_side" in info:
        where = (f"{info['documents_with_a_window']} of the {info['library_documents']} python3.11-doc library pages "
                 f"have a {max_words}-word window starting at word {args.skip_words}; {info['documents_per_side']} "
                 f"documents per side, {info['window_layers']} non-overlapping window(s) deep, "
                 f"{info['beyond_first_window']} of the {2 * args.n} texts from a document's second or later window")
    else:
        where = f"windows read from {info.get('source', args.windows_json)}"
    body = f"""
{model} (float32 weights, {gpu}){tiny}, {ft}. Texts: {args.n} members and {args.n} non-members, {max_words}-word
windows of python3.11-doc library pages split by document ({where}). Texts of each length are the first words of
each window. SaMIA: {args.num_samples} samples per text, prefix ratio 0.5, temperature 1, top-k 50, top-p 1,
{args.gen_batch} sequences per generate call ({amp}), continuations cut to the reference's token
count, ROUGE-1 recall. Likelihood attacks (float32): k = 0.2. TPR@10%FPR: best TPR among ROC points with
FPR <= 10% (FPR moves in steps of {100 / args.n:.1f}%). AUROC - loss: paired bootstrap over texts
({args.n_boot} resamples of members and non-members, both attacks on the same resample), 95% percentile interval.
Tokens generated: what `generate` produced (per sequence up to its EOS; a batch runs to its longest budget), in
brackets those kept after the cut to the reference length; ms per generated token = sampling wall time / tokens
generated. Time per 100 texts counts the shared forward pass (likelihood attacks) or sampling (SaMIA variants) in
full for each method. Total wall time {total:.0f} s.{cpu_note}{partial_note}

{md}

Findings (computed from the tables):

{chr(10).join(findings(records, control, args.n))}
"""
    if not partial:
        print(md)
    title = f"SaMIA membership inference (benchmarks/samia.py, {gpu}, {args.n} + {args.n} texts)"
    path = _report.write_section(args.name, title, body, packages=("peft", "rouge-score"))
    atomic_write_json(path.with_suffix(".json"), {"args": {k: str(v) for k, v in vars(args).items()}, "info": info,
                                                  "train_losses": train_losses, "records": records,
                                                  "control": control, "partial": partial})
    print(path)
