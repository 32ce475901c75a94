"""``hf-ext anyprec MODEL --seed-bits 3 --max-bits 8 --out DIR [--push REPO]``: build, measure, save, share."""

from __future__ import annotations

import argparse

from transformers.utils import logging

logger = logging.get_logger(__name__)


def cmd_anyprec(args: argparse.Namespace) -> int:
    from ..common.models import load_model
    from ..common.utils import atomic_dir, check_output_dir, timer
    from .api import quantize
    from .config import AnyPrecisionConfig
    from .model import evaluate_precisions, memory_report
    from .quantizer import checkpoint_file_size

    cfg = AnyPrecisionConfig(seed_bits=args.seed_bits, max_bits=args.max_bits, calibration=args.calibration,
                             n_samples=args.n_samples, seqlen=args.seqlen, seed=args.seed)
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


def register(subparsers, eval_subparsers) -> None:
    p = subparsers.add_parser("anyprec", help="any-precision quantization: one checkpoint, every bit width")
    p.add_argument("model", help="model path or Hub id ('default': Gemma 3 270M)")
    p.add_argument("--seed-bits", type=int, default=3, help="bits of the seed model (default 3)")
    p.add_argument("--max-bits", type=int, default=8, help="bits of the parent model (default 8)")
    p.add_argument("--out", required=True, help="output folder (written atomically; must be empty or new)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace what hf-ext wrote earlier in --out (files it did not write are kept)")
    p.add_argument("--push", default=None, help="Hub repo id to push the checkpoint and its model card to")
    p.add_argument("--private", action="store_true", help="create the Hub repo private")
    p.add_argument("--calibration", default="pydocs", help="calibration text source")
    p.add_argument("--n-samples", type=int, default=16, help="calibration windows")
    p.add_argument("--seqlen", type=int, default=512, help="tokens per calibration window")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-data", default="pydocs", help="perplexity text for the model card")
    p.add_argument("--eval-tokens", type=int, default=4088, help="predicted tokens per perplexity (0: skip)")
    p.add_argument("--precision", type=int, default=None, help="precision active after reloading (default: max)")
    p.set_defaults(func=cmd_anyprec)
