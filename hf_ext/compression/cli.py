"""``hf-ext compress MODEL --sparsity 0.7 --allocation mrp --metric sparsegpt --bits 4 --out DIR``."""

from __future__ import annotations

import argparse
from pathlib import Path

from .config import ALLOCATIONS, METRICS, MRP_MODES, RESIDENT


def register(subparsers, eval_subparsers) -> None:
    p = subparsers.add_parser("compress", help="prune (and quantize) a causal LM; writes a from_pretrained folder")
    p.add_argument("model", help="model folder or Hub id ('default': the embedded Gemma 3 270M)")
    p.add_argument("--out", required=True, help="output folder (written atomically; must be empty or new)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace what hf-ext wrote earlier in --out (files it did not write are kept)")
    p.add_argument("--sparsity", type=float, default=0.5)
    p.add_argument("--allocation", choices=ALLOCATIONS, default="uniform")
    p.add_argument("--metric", choices=METRICS, default="wanda")
    p.add_argument("--structure", default="unstructured", help="'unstructured' or 'N:M' (e.g. 2:4)")
    p.add_argument("--bits", type=int, default=None, help="bits of the kept weights (2..8); default: no quantization")
    p.add_argument("--group-size", type=int, default=128)
    p.add_argument("--calibration", default="pydocs", help="calibration text: pydocs, wikitext2, c4 or a path")
    p.add_argument("--n-samples", type=int, default=128)
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mrp-mode", choices=MRP_MODES, default="measured",
                   help="MRP: re-prune and measure each step (measured) or simulate from dense scores (fast)")
    p.add_argument("--refit-iters", type=int, default=0,
                   help="conjugate-gradient steps refitting the kept weights on the mask (0: off)")
    p.add_argument("--resident", choices=RESIDENT, default="dense",
                   help="keep a dense weight cache in memory (dense) or only the packed buffers (packed)")
    p.add_argument("--eval", default=None, help="also measure perplexity on this text source (recorded in the card)")
    p.add_argument("--eval-max-tokens", type=int, default=None)
    p.add_argument("--low-memory", action="store_true",
                   help="stream the (safetensors) checkpoint from disk one block at a time instead of loading it: "
                        "for models larger than memory")
    p.set_defaults(func=cmd_compress)


def cmd_compress(args: argparse.Namespace) -> int:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..common.models import resolve_model_path
    from ..common.perplexity import perplexity
    from ..common.utils import atomic_dir, check_output_dir
    from .config import CompressionConfig
    from .quantizer import record_eval

    cfg = CompressionConfig(
        sparsity=args.sparsity, allocation=args.allocation, metric=args.metric, structure=args.structure,
        bits=args.bits, group_size=args.group_size, calibration=args.calibration, n_samples=args.n_samples,
        seqlen=args.seqlen, seed=args.seed, mrp_mode=args.mrp_mode, refit_iters=args.refit_iters,
        resident=args.resident,
    )
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

    if args.eval:
        raise ValueError("--eval needs the whole model in memory, which --low-memory avoids; measure the output "
                         "folder afterwards with `hf-ext eval ppl --model OUT`.")
    report = compress_checkpoint(args.model, args.out, cfg, overwrite=args.overwrite)
    print(report.to_markdown())
    print(f"Saved to {args.out}, compressed from disk one block at a time (achieved sparsity "
          f"{report.achieved_sparsity:.4f}, peak RSS {report.peak_rss_mib:.0f} MiB).")
    return 0
