"""SaMIA benchmark: a controlled member / non-member experiment on the default model.

Members and non-members are windows of the same kind of text: documents of the python3.11-doc library section,
shuffled with a fixed seed and split in two. From each document we take ``--max-words`` whitespace words starting
at word ``--skip-words`` (past the formulaic reST headers). The default model (Gemma 3 270M) is fully fine-tuned
on the member windows for ``--epochs`` epochs; non-members are never trained on. Texts of 32 / 64 / 128 words are
the first words of each window, so a shorter text of a member is part of what was trained on.

Then SaMIA, SaMIA*zlib and the likelihood baselines (loss, zlib, min-k%, min-k%++; k = 0.2) score every text,
each with AUROC, TPR at 10% FPR (best ROC point with FPR <= 10%) and wall time per 100 texts (the shared forward
pass / sampling counted in full for each method, i.e. the cost of running it alone).

    .venv/bin/python benchmarks/samia.py                      # 12 + 12 texts, 2 epochs, 5 samples
    .venv/bin/python benchmarks/samia.py --n 40 --num-samples 10
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import torch  # noqa: E402
from _report import table, write_section  # noqa: E402

from hf_ext.common.data import load_text  # noqa: E402
from hf_ext.common.models import load_model, tiny_model  # noqa: E402
from hf_ext.common.utils import execution_device  # noqa: E402
from hf_ext.privacy import AttackConfig, SamiaConfig, attack  # noqa: E402

METHODS = ["samia", "samia_zlib", "loss", "zlib", "min_k", "min_k_plus_plus"]


def pick_windows(n: int, max_words: int, skip: int, seed: int, windows_json: str | None = None,
                 ) -> tuple[list[list[str]], list[list[str]]]:
    if windows_json and os.path.isfile(windows_json):  # prepared elsewhere (a machine without python3.11-doc)
        with open(windows_json) as f:
            docs = json.load(f)
        return docs["members"][:n], docs["non_members"][:n]
    docs = [d.split() for d in load_text("pydocs", "eval")]
    docs = [d[skip : skip + max_words] for d in docs if len(d) >= skip + max_words]
    random.Random(seed).shuffle(docs)
    if len(docs) < 2 * n:
        raise SystemExit(f"only {len(docs)} documents have {skip + max_words} words; lower --n")
    if windows_json:
        with open(windows_json, "w") as f:
            json.dump({"members": docs[:n], "non_members": docs[n : 2 * n]}, f)
    return docs[:n], docs[n : 2 * n]


def fine_tune(model, tokenizer, texts: list[str], epochs: int, lr: float, seed: int) -> list[float]:
    """Full fine-tuning, batch 1 (no padding), AdamW; returns the mean training loss of each epoch."""
    torch.manual_seed(seed)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    order = list(range(len(texts)))
    losses = []
    for epoch in range(epochs):
        random.Random(seed + epoch).shuffle(order)
        total = 0.0
        for i in order:
            ids = tokenizer(texts[i], return_tensors="pt").input_ids.to(model.device)
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            total += loss.item()
        losses.append(total / len(texts))
        print(f"epoch {epoch + 1}: mean train loss {losses[-1]:.3f}", flush=True)
    model.eval()
    del opt
    return losses


def device_name() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=12, help="members (and as many non-members)")
    ap.add_argument("--lengths", type=int, nargs="+", default=[32, 64, 128])
    ap.add_argument("--skip-words", type=int, default=150)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--num-samples", type=int, default=5)
    ap.add_argument("--gen-batch", type=int, default=40, help="sequences per generate call")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tiny", action="store_true", help="smoke test on a tiny random model (numbers meaningless)")
    ap.add_argument("--model", default="default", help="model path ('default': Gemma 3 270M)")
    ap.add_argument("--windows-json", default=None, help="read the texts from (or, if absent, write them to) this")
    ap.add_argument("--control", action="store_true", help="also attack the model before fine-tuning")
    ap.add_argument("--name", default="samia", help="results file name under benchmarks/results/")
    args = ap.parse_args()
    t_start = time.perf_counter()
    max_words = max(args.lengths)
    members, non_members = pick_windows(args.n, max_words, args.skip_words, args.seed, args.windows_json)
    model, tok = tiny_model("gemma") if args.tiny else load_model(args.model)
    model.to(execution_device())
    cfg = AttackConfig(k=0.2, batch_size=4, fpr=0.1, tpr_mode="le")
    control_rows = []
    if args.control:
        for length in args.lengths:
            control_rows += run_attacks(model, tok, members, non_members, length, cfg, args, tag="before FT ")
    t = time.perf_counter()
    train_losses = fine_tune(model, tok, [" ".join(w) for w in members], args.epochs, args.lr, args.seed)
    t_train = time.perf_counter() - t

    rows = []
    for length in args.lengths:
        rows += run_attacks(model, tok, members, non_members, length, cfg, args)
        done = length == args.lengths[-1]
        report(args, rows, control_rows, train_losses, t_train, time.perf_counter() - t_start, max_words,
               partial=not done)


def run_attacks(model, tok, members, non_members, length, cfg, args, tag="") -> list[list]:
    texts = [" ".join(w[:length]) for w in members + non_members]
    labels = [1] * len(members) + [0] * len(non_members)
    scfg = SamiaConfig(num_samples=args.num_samples, batch_size=args.gen_batch, seed=args.seed)
    res = attack(model, tok, texts, labels, methods=METHODS, config=cfg, samia_config=scfg, progress=False)
    rows = []
    for m in METHODS:
        r = res[m]
        rows.append([length, m, r.auroc, r.tpr_at_fpr, f"{100 * r.seconds / len(texts):.1f}"])
        print(f"{tag}{length:>4} words  {m:<16} AUROC {r.auroc:.3f}  TPR@10%FPR {r.tpr_at_fpr:.3f}  "
              f"{100 * r.seconds / len(texts):.1f} s/100 texts", flush=True)
    return rows


def report(args, rows, control_rows, train_losses, t_train, total, max_words, partial) -> None:
    """Write the results section (also after each length, so an interrupted run leaves what it measured)."""
    header = ["words", "method", "AUROC", "TPR@10%FPR", "s / 100 texts"]
    md = table(header, rows)
    if control_rows:
        md += ("\n\nControl: the same attacks on the model before fine-tuning (no text is a member yet, so every "
               "AUROC should be near 0.5; a value far from it would reveal a difference between the two sets)."
               "\n\n" + table(header, control_rows))
    load = os.getloadavg()[0]
    cpu_note = "" if torch.cuda.is_available() else (
        f" Load average when this was written: {load:.1f} on {os.cpu_count()} cores"
        + (" (shared CPU: times are upper bounds)." if load > 1.5 * (os.cpu_count() or 1) else "."))
    tiny = " [--tiny smoke test: numbers meaningless]" if args.tiny else ""
    partial_note = " PARTIAL: the run was still going when this was written." if partial else ""
    body = f"""
Gemma 3 270M (float32, {device_name()}){tiny}, fully fine-tuned on
{args.n} member texts ({max_words}-word windows of python3.11-doc library pages, starting at word {args.skip_words})
for {args.epochs} epochs (AdamW, lr {args.lr}, batch 1; mean train loss per epoch:
{', '.join(f'{x:.3f}' for x in train_losses)}; {t_train:.0f} s). Non-members: {args.n} windows of other library
pages, never trained on (same kind of text, no temporal or topical shift by construction). Texts of each length are
the first words of each window. SaMIA: {args.num_samples} samples per text, prefix ratio 0.5, temperature 1,
top-k 50, top-p 1, continuations cut to the reference's token count, ROUGE-1 recall. Likelihood attacks: k = 0.2.
TPR@10%FPR: best TPR among ROC points with FPR <= 10% (with {args.n} non-members, FPR moves in steps of
{100 / args.n:.1f}%). Time per 100 texts counts the shared forward pass (likelihood attacks) or sampling (SaMIA
variants) in full for each method. Total wall time {total:.0f} s.{cpu_note}{partial_note}

{md}
"""
    if not partial:
        print(md)
    title = f"SaMIA membership inference (benchmarks/samia.py, {device_name()}, {args.n} + {args.n} texts)"
    print(write_section(args.name, title, body))


if __name__ == "__main__":
    main()
