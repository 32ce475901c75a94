"""``hf-ext eval mia``: membership-inference attacks on a WikiMIA-format file (``input``, ``label`` columns)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction, eval_sub: argparse._SubParsersAction) -> None:
    """Add ``hf-ext eval mia``."""
    from .attacks import DEFAULT_METHODS, METHODS

    p = eval_sub.add_parser("mia", help="membership inference (loss, zlib, min-k%%, min-k%%++, SaMIA) on texts")
    p.add_argument("--model", default="default", help="model path or Hub id ('default': Gemma 3 270M)")
    p.add_argument("--data", required=True, help="WikiMIA-format .jsonl/.json/.csv/.parquet file or Hub dataset id")
    p.add_argument("--split", default="train", help="split of a Hub dataset (e.g. WikiMIA_length64)")
    p.add_argument("--text-column", default="input")
    p.add_argument("--label-column", default="label")
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=METHODS)
    p.add_argument("--num-samples", type=int, default=10, help="SaMIA continuations per text")
    p.add_argument("--prefix-ratio", type=float, default=0.5, help="SaMIA prompt fraction of whitespace words")
    p.add_argument("--k", type=float, default=0.2, help="token fraction for min-k / min-k++")
    p.add_argument("--fpr", type=float, default=0.1, help="FPR at which TPR is reported")
    p.add_argument("--tpr-mode", default="le", choices=("le", "nearest"))
    p.add_argument("--batch-size", type=int, default=4, help="texts per forward pass (likelihood attacks)")
    p.add_argument("--max-length", type=int, default=None, help="truncate texts to this many tokens")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default=None, help="write per-text scores and metrics to this JSON file")
    p.set_defaults(func=cmd_eval_mia)


def cmd_eval_mia(args: argparse.Namespace) -> int:
    from ..common.models import load_model
    from ..common.utils import atomic_write_json
    from .attacks import AttackConfig, attack
    from .data import load_mia_dataset
    from .samia import SamiaConfig

    cfg = AttackConfig(k=args.k, batch_size=args.batch_size, max_length=args.max_length, fpr=args.fpr,
                       tpr_mode=args.tpr_mode)
    scfg = SamiaConfig(num_samples=args.num_samples, prefix_ratio=args.prefix_ratio, seed=args.seed)
    data = load_mia_dataset(args.data, split=args.split, text_column=args.text_column,
                            label_column=args.label_column, require_labels=False)
    model, tokenizer = load_model(args.model)
    results = attack(model, tokenizer, data.texts, data.labels, methods=args.methods, config=cfg, samia_config=scfg)
    print(f"{len(data)} texts" + ("" if data.labels is None else f" ({sum(data.labels)} members)"))
    if data.labels is None:
        print("No labels: per-text scores only (higher = member)." + ("" if args.output else " Use --output."))
    print(f"| method | AUROC | TPR@{args.fpr:.0%}FPR ({args.tpr_mode}) | s / 100 texts |")
    print("|---|---|---|---|")
    for r in results.values():
        auc = "-" if r.auroc is None else f"{r.auroc:.3f}"
        tpr = "-" if r.tpr_at_fpr is None else f"{r.tpr_at_fpr:.3f}"
        print(f"| {r.method} | {auc} | {tpr} | {100 * r.seconds / len(data):.1f} |")
    if args.output:
        atomic_write_json(args.output, {"data": str(args.data), "model": str(args.model),
                                        "results": {m: r.to_dict() for m, r in results.items()}})
        print(f"wrote {args.output}")
    return 0

