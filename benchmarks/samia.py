"""SaMIA benchmark: a controlled member / non-member experiment on the default model, 500 + 500 texts by default.

Members and non-members are 128-word windows of the same kind of text: documents of the python3.11-doc library
section, shuffled with a fixed seed and split in two halves by document (no document gives both a member and a
non-member). Windows start at word ``--skip-words`` (past the formulaic reST headers). Only 265 of the 317 library
documents have the 150 + 128 words of a first window, so one window per document gives at most 132 + 132 texts.
For more, each side takes its documents' first windows, then their second windows (words 278-405), and so on,
never overlapping (2,676 windows on the smaller side). Up to 132 + 132 texts this is exactly one window per
document, as in the earlier published runs; at 500 + 500, 736 of the 1,000 texts come from a second to fifth
window (seed 0; each run's report states its counts). The default model (Gemma 3 270M) is fully fine-tuned on the
member windows for ``--epochs`` epochs (``--epochs 0``: no fine-tuning, the control run); non-members are never
trained on. Texts of 32 / 64 / 128 words are the first words of each window.

Then SaMIA, SaMIA*zlib and the likelihood baselines (loss, zlib, min-k%, min-k%++; k = 0.2) score every text.
Per length and method the table gives AUROC, TPR at 10% FPR, the AUROC gap to the loss attack with a paired
bootstrap 95% CI over texts, the tokens SaMIA's sampling generated (as ``generate`` produced them, and kept after
the cut to the reference length), ms per generated token, and wall time per 100 texts (shared work counted in full
for each method). Per-text scores go to ``<name>.json`` beside the table.

Cost, estimated from the published CPU run (20 + 20 texts, 3 epochs, 10 samples: 1,341 s on the 2-core CPU at
load 1.7, 252 s of it fine-tuning): about 4.2 s per fine-tuning step (``n * epochs`` steps) and 27 s per text for
the attacks at the three lengths, i.e. about 67 s per member-and-non-member pair. The default 500 + 500 texts
therefore need about 33,500 s (9.3 hours; the attack part twice with ``--control``) on this CPU: run it on a GPU.
On the CPU, ``--n 8`` (8 + 8 texts, ~540 s plus model loading; FPR moves in 12.5% steps) fits in about 10 minutes.
On a GPU: the published H100 run (100 + 100, float32, gen-batch 200, with ``--control``) took 244 s, about 0.53 s
per text per attack pass and 0.11 s per fine-tuning step, so 500 + 500 without ``--control`` is about 700 s in
float32, and less with ``--device cuda``'s bfloat16 sampling and larger batches (not measured yet). A run that may
not fit a time limit can be split by length on the same texts and fine-tuning (``--lengths 32 64 --window-words
128``, then ``--lengths 128``, each with its own ``--name``); each length's table is written as soon as it is done.

    python benchmarks/samia.py --tiny                      # smoke test, tiny random model, writes benchmarks/out/
    python benchmarks/samia.py --n 8                       # CPU, ~10 minutes -> benchmarks/results/samia_cpu.md
    python benchmarks/samia.py --n 500 --windows-json w.json --windows-only   # texts for a machine without the docs
    python benchmarks/samia.py --device cuda --windows-json w.json            # 500 + 500 -> samia_cuda.md
    python benchmarks/samia.py --device cuda --windows-json w.json --epochs 0 --name samia_cuda_control
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
import _report  # noqa: E402
import torch  # noqa: E402
from _samia_report import report  # noqa: E402

from hf_ext.common.data import load_text  # noqa: E402
from hf_ext.common.models import load_model, tiny_model  # noqa: E402
from hf_ext.privacy import AttackConfig, SamiaConfig, attack, auroc_difference  # noqa: E402

LIKELIHOOD = ["loss", "zlib", "min_k", "min_k_plus_plus"]
SAMPLING = ["samia", "samia_zlib"]
METHODS = SAMPLING + LIKELIHOOD
# No float16: Gemma 3's activations overflow it, and fine-tuning in it would need a gradient scaler.
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def pick_windows(n: int, max_words: int, skip: int, seed: int, windows_json: str | None = None,
                 ) -> tuple[list[list[str]], list[list[str]], dict]:
    """``n`` member and ``n`` non-member windows (word lists) and a description of where they come from."""
    if windows_json and os.path.isfile(windows_json):  # prepared elsewhere (a machine without python3.11-doc)
        with open(windows_json) as f:
            docs = json.load(f)
        if min(len(docs["members"]), len(docs["non_members"])) < n:
            raise SystemExit(f"{windows_json} holds {len(docs['members'])} + {len(docs['non_members'])} windows; "
                             f"lower --n to at most that or prepare it again with --n {n}")
        return docs["members"][:n], docs["non_members"][:n], docs.get("info", {"source": windows_json})
    all_docs = [d.split() for d in load_text("pydocs", "eval")]
    docs = [d for d in all_docs if len(d) >= skip + max_words]
    random.Random(seed).shuffle(docs)
    per_side = min(n, len(docs) // 2)
    sides, depth = [], 0
    for side_docs in (docs[:per_side], docs[per_side : 2 * per_side]):
        wins, j = [], 0
        while len(wins) < n:  # layer j: every document's (j + 1)-th window, in the shuffled order
            start = skip + j * max_words
            layer = [d[start : start + max_words] for d in side_docs if len(d) >= start + max_words]
            if not layer:
                raise SystemExit(f"only {len(wins)} non-overlapping {max_words}-word windows on one side; lower --n")
            wins += layer[: n - len(wins)]
            j += 1
        sides.append(wins)
        depth = max(depth, j)
    info = {"library_documents": len(all_docs), "documents_with_a_window": len(docs), "documents_per_side": per_side,
            "window_layers": depth, "beyond_first_window": 2 * n - 2 * min(n, per_side)}
    if windows_json:
        with open(windows_json, "w") as f:
            json.dump({"members": sides[0], "non_members": sides[1], "info": info}, f)
    return sides[0], sides[1], info


def fine_tune(model, tokenizer, texts: list[str], epochs: int, lr: float, seed: int, amp) -> list[float]:
    """Full fine-tuning, batch 1 (no padding), AdamW (float32 weights; ``amp`` autocasts the forward pass);
    returns the mean training loss of each epoch."""
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    order = list(range(len(texts)))
    losses = []
    for epoch in range(epochs):
        random.Random(seed + epoch).shuffle(order)
        total = 0.0
        for i in tqdm(order, desc=f"fine-tuning epoch {epoch + 1}", mininterval=30):
            ids = tokenizer(texts[i], return_tensors="pt").input_ids.to(model.device)
            with amp():
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


def run_attacks(model, tok, members, non_members, length: int, args, amp, tag: str = "") -> list[dict]:
    """Every method at one text length: one record per method (metrics, gap to loss, sampling counts, scores)."""
    texts = [" ".join(w[:length]) for w in members + non_members]
    labels = [1] * len(members) + [0] * len(non_members)
    cfg = AttackConfig(k=0.2, batch_size=args.score_batch, fpr=0.1, tpr_mode="le")
    scfg = SamiaConfig(num_samples=args.num_samples, batch_size=args.gen_batch, seed=args.seed)
    res = attack(model, tok, texts, labels, methods=LIKELIHOOD, config=cfg, progress=False)  # float32 likelihoods
    with amp():
        res.update(attack(model, tok, texts, labels, methods=SAMPLING, config=cfg, samia_config=scfg, progress=True))
    records = []
    for m in METHODS:
        r = res[m]
        gap = auroc_difference(r.scores, res["loss"].scores, labels, n_boot=args.n_boot, seed=args.seed)
        rec = {"words": length, "method": m, "auroc": r.auroc, "tpr_at_fpr": r.tpr_at_fpr, "gap": gap,
               "s_per_100": 100 * r.seconds / len(texts), "sampling": r.sampling.to_dict() if r.sampling else None,
               "scores": r.scores, "labels": labels}
        records.append(rec)
        cost = ""
        if r.sampling:
            s = r.sampling
            cost = f"  {s.generated_tokens} tokens generated ({s.kept_tokens} kept), " \
                   f"{s.ms_per_generated_token:.2f} ms/token"
        print(f"{tag}{length:>4} words  {m:<16} AUROC {r.auroc:.3f}  TPR@10%FPR {r.tpr_at_fpr:.3f}  gap to loss "
              f"{gap['difference']:+.3f} [{gap['low']:+.3f}, {gap['high']:+.3f}]  "
              f"{rec['s_per_100']:.1f} s/100 texts{cost}", flush=True)
    return records


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=None, help="members (and as many non-members); default 500, --tiny 6")
    ap.add_argument("--lengths", type=int, nargs="+", default=None,
                    help="text lengths in words (default 32 64 128; --tiny 16 32, within the tiny model's context)")
    ap.add_argument("--skip-words", type=int, default=150, help="first window starts at this word")
    ap.add_argument("--window-words", type=int, default=None,
                    help="words per window, trained on (default: the longest --lengths); set it to split a run by "
                         "length with the same texts")
    ap.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs (0: none; default 3, --tiny 1)")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--num-samples", type=int, default=None, help="SaMIA samples per text (default 10, --tiny 2)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--dtype", choices=list(DTYPES), default=None,
                    help="autocast dtype of fine-tuning and sampling (likelihoods stay float32); default float32 on "
                         "the CPU, bfloat16 on CUDA")
    ap.add_argument("--gen-batch", type=int, default=None, help="sequences per generate call (CPU 40, CUDA 1000)")
    ap.add_argument("--score-batch", type=int, default=None, help="texts per likelihood forward pass (CPU 4, CUDA 32)")
    ap.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples of the AUROC gap")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tiny", action="store_true", help="smoke test on a tiny random model (numbers meaningless)")
    ap.add_argument("--model", default="default", help="model path ('default': Gemma 3 270M)")
    ap.add_argument("--windows-json", default=None, help="read the texts from (or, if absent, write them to) this")
    ap.add_argument("--windows-only", action="store_true", help="write --windows-json and stop")
    ap.add_argument("--control", action="store_true", help="also attack the model before fine-tuning")
    ap.add_argument("--name", default=None, help="results name (default samia_cpu / samia_cuda; --tiny: samia_tiny)")
    ap.add_argument("--out-dir", default=None, help="results folder (default benchmarks/results; --tiny: "
                                                     "benchmarks/out)")
    args = ap.parse_args(argv)
    tiny = args.tiny
    args.n = args.n if args.n is not None else (6 if tiny else 500)
    args.lengths = args.lengths or ([16, 32] if tiny else [32, 64, 128])
    args.window_words = args.window_words or max(args.lengths)
    args.epochs = args.epochs if args.epochs is not None else (1 if tiny else 3)
    args.num_samples = args.num_samples if args.num_samples is not None else (2 if tiny else 10)
    cuda = args.device == "cuda"
    args.dtype = args.dtype or ("bfloat16" if cuda else "float32")
    args.gen_batch = args.gen_batch or (1000 if cuda else 40)
    args.score_batch = args.score_batch or (32 if cuda else 4)
    args.name = args.name or ("samia_tiny" if tiny else f"samia_{args.device}")
    out = Path(__file__).resolve().parent / "out" if tiny else _report.RESULTS_DIR
    args.out_dir = Path(args.out_dir) if args.out_dir else out
    # Every check that needs no model runs here, before the texts are read or a model is loaded.
    bad = [(f, v) for f, v in [("--n", args.n), ("--num-samples", args.num_samples), ("--gen-batch", args.gen_batch),
                               ("--score-batch", args.score_batch), ("--n-boot", args.n_boot)] if v < 1]
    bad += [("--epochs", args.epochs)] if args.epochs < 0 else []
    bad += [("--lengths", v) for v in args.lengths if v < 2]
    if bad:
        ap.error(", ".join(f"{f} {v}" for f, v in bad) + ": must be positive (lengths >= 2 words, epochs >= 0)")
    if cuda and not torch.cuda.is_available():
        ap.error("--device cuda, but torch sees no CUDA device")
    if not cuda and args.dtype != "float32":
        ap.error(f"--dtype {args.dtype} is for --device cuda (CPU autocast would only slow this run down)")
    if args.window_words < max(args.lengths):
        ap.error(f"--window-words {args.window_words} is shorter than --lengths {max(args.lengths)}")
    if args.windows_only and not args.windows_json:
        ap.error("--windows-only needs --windows-json")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    t_start = time.perf_counter()
    max_words = args.window_words
    members, non_members, info = pick_windows(args.n, max_words, args.skip_words, args.seed, args.windows_json)
    print(f"{len(members)} + {len(non_members)} windows: {info}", flush=True)
    if args.windows_only:
        return
    model, tok = tiny_model("gemma") if args.tiny else load_model(args.model)
    model.to(torch.device(args.device)).float()
    dtype = DTYPES[args.dtype]

    def amp():
        if dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=args.device, dtype=dtype)

    _report.RESULTS_DIR = args.out_dir  # write_section writes <out_dir>/<name>.md
    control = []
    if args.control:
        for length in args.lengths:
            control += run_attacks(model, tok, members, non_members, length, args, amp, tag="before FT ")
    t = time.perf_counter()
    train_losses = fine_tune(model, tok, [" ".join(w) for w in members], args.epochs, args.lr, args.seed, amp)
    t_train = time.perf_counter() - t

    records = []
    for length in args.lengths:
        records += run_attacks(model, tok, members, non_members, length, args, amp)
        done = length == args.lengths[-1]
        report(args, records, control, info, train_losses, t_train, time.perf_counter() - t_start, max_words,
               partial=not done)


if __name__ == "__main__":
    main()
