"""``hf-ext prune MODEL --ratio 0.2 --criterion mini_llm --out DIR``: structured pruning from the command line."""

from __future__ import annotations

import argparse

RESULT_FIELDS = ("layer_shapes", "achieved_ratio")  # written by a run, needed to reload


def register(subparsers, eval_subparsers) -> None:
    from ..common.cli_args import add_config_arguments
    from .config import CRITERIA, HEAD_GRANULARITIES, SPSA_SCOPES, StructuredPruningConfig

    p = subparsers.add_parser("prune", help="structured pruning (MINI-LLM): remove heads and MLP channels",
                              description="Options below the first group are StructuredPruningConfig's fields.")
    p.add_argument("model", help="model path or Hub id ('default': Gemma 3 270M)")
    p.add_argument("--out", required=True, help="folder for the pruned model (reloads with from_pretrained; must be "
                                                "empty or new)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace what hf-ext wrote earlier in --out (files it did not write are kept)")
    add_config_arguments(p, StructuredPruningConfig, exclude=RESULT_FIELDS,
                         choices={"criterion": CRITERIA, "head_granularity": HEAD_GRANULARITIES,
                                  "spsa_scope": SPSA_SCOPES})
    p.set_defaults(func=cmd_prune)


def cmd_prune(args: argparse.Namespace) -> int:
    from ..common.cli_args import config_from_args
    from ..common.models import load_model
    from ..common.utils import atomic_dir, check_output_dir
    from .config import StructuredPruningConfig
    from .quantizer import prune_structured

    cfg = config_from_args(StructuredPruningConfig, args)
    check_output_dir(args.out, args.overwrite)  # before any heavy work
    model, tokenizer = load_model(args.model)
    prune_structured(model, tokenizer, cfg)
    report = model.hf_quantizer.report
    with atomic_dir(args.out, overwrite=args.overwrite) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    print(f"Removed {100 * report.achieved_ratio:.2f} % of prunable parameters (target {100 * cfg.ratio:.1f} %): "
          f"{report.params_before / 1e6:.1f} M -> {report.params_after / 1e6:.1f} M parameters in "
          f"{report.total_seconds:.1f} s. Saved to {args.out}")
    return 0
