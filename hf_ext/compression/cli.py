"""``hf-ext compress MODEL --sparsity 0.7 --allocation mrp --metric sparsegpt --bits 4 --out DIR``."""

from __future__ import annotations

import argparse
from pathlib import Path

# Written by a run (needed to reload a checkpoint), not chosen by the user.
RESULT_FIELDS = ("block_sparsities", "achieved_sparsity", "compressed_layers", "compute_dtype", "base_model")


def register(subparsers, eval_subparsers) -> None:
    from ..common.cli_args import add_config_arguments
    from .config import ALLOCATIONS, METRICS, MRP_MODES, RESIDENT, CompressionConfig

    p = subparsers.add_parser("compress", help="prune (and quantize) a causal LM; writes a from_pretrained folder",
                              description="Options below the first group are CompressionConfig's fields.")
    p.add_argument("model", help="model folder or Hub id ('default': the embedded Gemma 3 270M)")
    p.add_argument("--out", required=True, help="output folder (written atomically; must be empty or new)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace what hf-ext wrote earlier in --out (files it did not write are kept)")
    p.add_argument("--eval", default=None, help="also measure perplexity on this text source (recorded in the card)")
    p.add_argument("--eval-max-tokens", type=int, default=None)
    p.add_argument("--low-memory", action="store_true",
                   help="stream the (safetensors) checkpoint from disk one block at a time instead of loading it: "
                        "for models larger than memory")
    add_config_arguments(p, CompressionConfig, exclude=RESULT_FIELDS,
                         choices={"allocation": ALLOCATIONS, "metric": METRICS, "mrp_mode": MRP_MODES,
                                  "resident": RESIDENT})
    p.set_defaults(func=cmd_compress)


def cmd_compress(args: argparse.Namespace) -> int:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..common.cli_args import config_from_args
    from ..common.models import resolve_model_path
    from ..common.perplexity import perplexity
    from ..common.utils import atomic_dir, check_output_dir
    from .config import CompressionConfig
    from .quantizer import record_eval

    cfg = config_from_args(CompressionConfig, args)
    if args.low_memory and args.eval:
        raise ValueError("--eval needs the whole model in memory, which --low-memory avoids; measure the output "
                         "folder afterwards with `hf-ext eval ppl --model OUT`.")
    check_output_dir(args.out, args.overwrite)  # before any heavy work
    if args.low_memory:
        return _compress_from_disk(args, cfg)
    path = resolve_model_path(args.model)
    model = AutoModelForCausalLM.from_pretrained(path, quantization_config=cfg)
    tokenizer = AutoTokenizer.from_pretrained(path)
    report = model.compression_report
    print(report.to_markdown())
    if args.eval:
        res = perplexity(model, tokenizer, args.eval, max_tokens=args.eval_max_tokens)
        record_eval(model, "perplexity", res.perplexity, res.protocol)
        print(f"perplexity {res.perplexity:.4f} ({res.protocol})")
    out = Path(args.out)
    with atomic_dir(out, overwrite=args.overwrite) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        report.save(tmp)
    print(f"Saved to {out} (README.md, compression_report.md, compression_report.png; achieved sparsity "
          f"{report.achieved_sparsity:.4f}).")
    return 0


def _compress_from_disk(args: argparse.Namespace, cfg) -> int:
    from .from_disk import compress_checkpoint

    report = compress_checkpoint(args.model, args.out, cfg, overwrite=args.overwrite)
    print(report.to_markdown())
    print(f"Saved to {args.out}, compressed from disk one block at a time (achieved sparsity "
          f"{report.achieved_sparsity:.4f}, peak RSS {report.peak_rss_mib:.0f} MiB).")
    return 0
