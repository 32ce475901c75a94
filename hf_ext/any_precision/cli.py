"""``hf-ext anyprec MODEL --seed-bits 3 --max-bits 8 --out DIR [--push REPO]``: build, measure, save, share."""

from __future__ import annotations

import argparse

from transformers.utils import logging

logger = logging.get_logger(__name__)


def cmd_anyprec(args: argparse.Namespace) -> int:
    from ..common.cli_args import config_from_args
    from ..common.models import load_model
    from ..common.utils import atomic_dir, check_output_dir, timer
    from .api import quantize
    from .config import AnyPrecisionConfig
    from .model import evaluate_precisions, memory_report
    from .quantizer import checkpoint_file_size

    cfg = config_from_args(AnyPrecisionConfig, args)
    check_output_dir(args.out, args.overwrite)  # before any heavy work
    if args.precision is not None and not cfg.seed_bits <= args.precision <= cfg.max_bits:
        raise ValueError(f"--precision {args.precision} is not stored: the checkpoint holds {cfg.seed_bits}.."
                         f"{cfg.max_bits} bits.")
    model, tokenizer = load_model(args.model)
    with timer() as t:
        quantize(model, tokenizer, cfg)
    print(f"Quantized {args.model} to {cfg.seed_bits}..{cfg.max_bits} bits in {t['seconds']:.1f} s")
    if args.eval_tokens > 0:
        results = evaluate_precisions(model, tokenizer, data=args.eval_data, max_tokens=args.eval_tokens)
    else:
        results = {k: {"perplexity": float("nan"), **m} for k, m in memory_report(model).items()}
    if args.precision is not None:
        model.set_precision(args.precision)
    with atomic_dir(args.out, overwrite=args.overwrite) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    print(f"Saved to {args.out} ({checkpoint_file_size(args.out) / 2**20:.1f} MiB of weights; model card README.md)")
    print("| bits | perplexity | linears MiB | model MiB |\n|---:|---:|---:|---:|")
    for k, r in results.items():
        print(f"| {k} | {r['perplexity']:.3f} | {r['linears_mib']:.1f} | {r['model_mib']:.1f} |")
    if args.push:
        url = model.push_to_hub(args.push, private=args.private)
        tokenizer.push_to_hub(args.push)
        print(f"Pushed to {url}")
    return 0


# Written by a run, or only meaningful when loading a checkpoint (precisions); --precision covers default_precision.
RESULT_FIELDS = ("checksums", "available_precisions", "metrics", "precisions", "default_precision")


def register(subparsers, eval_subparsers) -> None:
    from ..common.cli_args import add_config_arguments
    from .config import CACHE_POLICIES, AnyPrecisionConfig

    p = subparsers.add_parser("anyprec", help="any-precision quantization: one checkpoint, every bit width",
                              description="Options below the first group are AnyPrecisionConfig's fields.")
    p.add_argument("model", help="model path or Hub id ('default': Gemma 3 270M)")
    p.add_argument("--out", required=True, help="output folder (written atomically; must be empty or new)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace what hf-ext wrote earlier in --out (files it did not write are kept)")
    p.add_argument("--push", default=None, help="Hub repo id to push the checkpoint and its model card to")
    p.add_argument("--private", action="store_true", help="create the Hub repo private")
    p.add_argument("--eval-data", default="pydocs", help="perplexity text for the model card (default: pydocs)")
    p.add_argument("--eval-tokens", type=int, default=4088,
                   help="predicted tokens per perplexity, 0 to skip (default: 4088)")
    p.add_argument("--precision", type=int, default=None, help="precision active after reloading (default: max)")
    add_config_arguments(p, AnyPrecisionConfig, exclude=RESULT_FIELDS, choices={"cache_dequantized": CACHE_POLICIES})
    p.set_defaults(func=cmd_anyprec)
