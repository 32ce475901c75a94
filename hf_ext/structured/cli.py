"""``hf-ext prune MODEL --ratio 0.2 --criterion mini_llm --out DIR``: structured pruning from the command line."""

from __future__ import annotations

import argparse

from .config import CRITERIA, HEAD_GRANULARITIES, SPSA_SCOPES


def register(subparsers, eval_subparsers) -> None:
    p = subparsers.add_parser("prune", help="structured pruning (MINI-LLM): remove heads and MLP channels")
    p.add_argument("model", help="model path or Hub id ('default': Gemma 3 270M)")
    p.add_argument("--out", required=True, help="folder for the pruned model (reloads with from_pretrained; must be "
                                                "empty or new)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace what hf-ext wrote earlier in --out (files it did not write are kept)")
    p.add_argument("--ratio", type=float, default=0.2, help="fraction of prunable parameters removed")
    p.add_argument("--criterion", default="mini_llm", choices=CRITERIA)
    p.add_argument("--head-granularity", default="auto", choices=HEAD_GRANULARITIES)
    p.add_argument("--calibration", default="pydocs", help="calibration text source")
    p.add_argument("--n-samples", type=int, default=32)
    p.add_argument("--seqlen", type=int, default=128)
    p.add_argument("--spsa-queries", type=int, default=None,
                   help="mini_llm: SPSA queries per estimate unit (default: one orthogonal run per unit, accurate "
                        "but about 2 x gates / n-samples passes over the calibration data)")
    p.add_argument("--spsa-scope", default="type", choices=SPSA_SCOPES, help="mini_llm: gates per SPSA estimate")
    p.add_argument("--protect-first", type=int, default=0)
    p.add_argument("--protect-last", type=int, default=0)
    p.add_argument("--recovery-steps", type=int, default=0, help="LoRA recovery steps (0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_prune)


def cmd_prune(args: argparse.Namespace) -> int:
    from ..common.models import load_model
    from ..common.utils import atomic_dir, check_output_dir
    from .config import StructuredPruningConfig
    from .quantizer import prune_structured

    cfg = StructuredPruningConfig(
        ratio=args.ratio, criterion=args.criterion, head_granularity=args.head_granularity,
        calibration=args.calibration, n_samples=args.n_samples, seqlen=args.seqlen, spsa_queries=args.spsa_queries,
        spsa_scope=args.spsa_scope,
        protect_first=args.protect_first, protect_last=args.protect_last, recovery_steps=args.recovery_steps,
        seed=args.seed,
    )
    check_output_dir(args.out, args.overwrite)  # before any heavy work
    model, tokenizer = load_model(args.model)
    prune_structured(model, tokenizer, cfg)
    report = model.hf_quantizer.report
    with atomic_dir(args.out, overwrite=args.overwrite) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    print(f"Removed {100 * report.achieved_ratio:.2f} % of prunable parameters (target {100 * args.ratio:.1f} %): "
          f"{report.params_before / 1e6:.1f} M -> {report.params_after / 1e6:.1f} M parameters in "
          f"{report.total_seconds:.1f} s. Saved to {args.out}")
    return 0
