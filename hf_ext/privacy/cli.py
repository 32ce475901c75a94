"""``hf-ext eval mia``: membership-inference attacks on a WikiMIA-format file (``input``, ``label`` columns)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction, eval_sub: argparse._SubParsersAction) -> None:
    """Add ``hf-ext eval mia``."""
    from ..common.cli_args import add_config_arguments
    from .attacks import DEFAULT_METHODS, METHODS, AttackConfig
    from .metrics import TPR_MODES
    from .samia import SamiaConfig

    p = eval_sub.add_parser("mia", help="membership inference (loss, zlib, min-k%%, min-k%%++, SaMIA) on texts",
                            description="The option groups below are AttackConfig's and SamiaConfig's fields.")
    p.add_argument("--model", default="default", help="model path or Hub id ('default': Gemma 3 270M)")
    p.add_argument("--data", required=True, help="WikiMIA-format .jsonl/.json/.csv/.parquet file or Hub dataset id")
    p.add_argument("--split", default="train", help="split of a Hub dataset (e.g. WikiMIA_length64)")
    p.add_argument("--text-column", default="input")
    p.add_argument("--label-column", default="label")
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=METHODS)
    p.add_argument("--output", default=None, help="write per-text scores and metrics to this JSON file")
    add_config_arguments(p, AttackConfig, choices={"tpr_mode": TPR_MODES})
    # zlib is chosen through --methods (samia_zlib); the shared names get a samia- prefix
    add_config_arguments(p, SamiaConfig, exclude=("zlib",), rename={"batch_size": "samia-batch-size"})
    p.set_defaults(func=cmd_eval_mia)


def cmd_eval_mia(args: argparse.Namespace) -> int:
    from ..common.cli_args import config_from_args
    from ..common.models import load_model
    from ..common.utils import atomic_write_json
    from .attacks import AttackConfig, attack
    from .data import load_mia_dataset
    from .samia import SamiaConfig

    cfg = config_from_args(AttackConfig, args)
    scfg = config_from_args(SamiaConfig, args)
    data = load_mia_dataset(args.data, split=args.split, text_column=args.text_column,
                            label_column=args.label_column, require_labels=False)
    model, tokenizer = load_model(args.model)
    results = attack(model, tokenizer, data.texts, data.labels, methods=args.methods, config=cfg, samia_config=scfg)
    print(f"{len(data)} texts" + ("" if data.labels is None else f" ({sum(data.labels)} members)"))
    if data.labels is None:
        print("No labels: per-text scores only (higher = member)." + ("" if args.output else " Use --output."))
    print(f"| method | AUROC | TPR@{cfg.fpr:.0%}FPR ({cfg.tpr_mode}) | s / 100 texts |")
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

