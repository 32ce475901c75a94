"""``hf-ext`` command line: one subcommand per job, each a thin layer over the Python API.

Capabilities plug in through ``_COMMAND_MODULES``: each module has ``register(subparsers, eval_subparsers)``
adding its subcommands (``eval_subparsers`` takes ``hf-ext eval <what>`` entries). ``hf-ext demo`` runs the
rows of ``_DEMO_MODULES``: each module has ``demo_rows(model, tokenizer, ctx) -> list[DemoRow]``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time

from transformers.utils import logging

from .common.demo import DemoContext, DemoRow

logger = logging.get_logger(__name__)

_COMMAND_MODULES: tuple[str, ...] = (
    "hf_ext.compression.cli",
    "hf_ext.structured.cli",
    "hf_ext.any_precision.cli",
    "hf_ext.privacy.cli",
    "hf_ext.speculative.cli",
    "hf_ext.serving.cli",
    "hf_ext.alignment.cli",
    "hf_ext.tool_cl.cli",
    "hf_ext.tiered_cache.cli",
)

_DEMO_MODULES: tuple[str, ...] = (
    "hf_ext.compression.demo",
    "hf_ext.structured.demo",
    "hf_ext.any_precision.demo",
    "hf_ext.speculative.demo",
    "hf_ext.privacy.demo",
    "hf_ext.serving.demo",
    "hf_ext.alignment.demo",
    "hf_ext.tool_cl.demo",
    "hf_ext.tiered_cache.demo",
)


def _print_table(rows: list[DemoRow]) -> None:
    header = ("capability", "setting", "metric", "value", "baseline", "note")
    cells = [header] + [
        (r.capability, r.setting, r.metric, _fmt(r.value), _fmt(r.baseline), r.note) for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    for j, c in enumerate(cells):
        print("| " + " | ".join(x.ljust(w) for x, w in zip(c, widths)) + " |")
        if j == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def cmd_demo(args: argparse.Namespace) -> int:
    import torch

    from .common.models import load_model
    from .common.perplexity import perplexity

    names = [n.split(".")[1] for n in _DEMO_MODULES]
    unknown = [o for o in args.only or [] if o != "dense" and not any(o in n for n in _DEMO_MODULES)]
    if unknown:
        raise ValueError(f"--only {' '.join(unknown)}: no demo row matches; choose from dense, {', '.join(names)}.")
    start = time.perf_counter()
    model, tokenizer = load_model(args.model)
    print(f"Loaded {args.model} ({sum(p.numel() for p in model.parameters()) / 1e6:.0f} M parameters) "
          f"in {time.perf_counter() - start:.1f} s")
    prompt = "The Python standard library"
    ids = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=24, do_sample=False)
    print(f"Greedy generation: {tokenizer.decode(out[0], skip_special_tokens=True)!r}\n")
    ctx = DemoContext(eval_data=args.data, seqlen=args.seqlen, max_tokens=args.max_tokens)
    res = perplexity(model, tokenizer, args.data, seqlen=args.seqlen, max_tokens=args.max_tokens)
    ctx.dense_ppl = res.perplexity
    rows = [DemoRow("dense", args.model, "perplexity", res.perplexity, note=res.protocol)]
    for name in _DEMO_MODULES:
        if args.only and not any(o in name for o in args.only):
            continue
        mod = importlib.import_module(name)
        t = time.perf_counter()
        new = mod.demo_rows(model, tokenizer, ctx)
        rows.extend(new)
        print(f"[demo] {name.split('.')[1]}: {len(new)} row(s) in {time.perf_counter() - t:.0f} s", flush=True)
    print()
    _print_table(rows)
    return 0


def cmd_eval_ppl(args: argparse.Namespace) -> int:
    from .common.models import load_model
    from .common.perplexity import perplexity

    model, tokenizer = load_model(args.model)
    res = perplexity(model, tokenizer, args.data, split=args.split, seqlen=args.seqlen, stride=args.stride,
                     batch_size=args.batch_size, max_tokens=args.max_tokens)
    print(f"perplexity {res.perplexity:.4f}  ({res.protocol}; {res.tokens_per_second:.0f} tokens/s)")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with hf-ext's one-line errors (``hf-ext: error: ...``, exit 2) for every subcommand."""

    def error(self, message: str):
        self.exit(2, f"hf-ext: error: {self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog="hf-ext", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"hf-ext {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    demo = sub.add_parser("demo", help="run the main job on the embedded default model and print a table")
    demo.add_argument("--model", default="default", help="model path or Hub id ('default': Gemma 3 270M)")
    demo.add_argument("--data", default="pydocs", help="evaluation text source")
    demo.add_argument("--seqlen", type=int, default=512)
    demo.add_argument("--max-tokens", type=int, default=4088, help="predicted tokens for each perplexity")
    demo.add_argument("--only", nargs="*", help="run only the demo rows whose module name contains these "
                                                   "('dense': the dense row alone)")
    demo.set_defaults(func=cmd_demo)

    ev = sub.add_parser("eval", help="evaluations")
    ev_sub = ev.add_subparsers(dest="what", required=True, parser_class=_Parser)
    ppl = ev_sub.add_parser("ppl", help="perplexity (non-overlapping windows, BOS first where the model uses it)")
    ppl.add_argument("--model", default="default")
    ppl.add_argument("--data", default="pydocs")
    ppl.add_argument("--split", default="eval")
    ppl.add_argument("--seqlen", type=int, default=512)
    ppl.add_argument("--stride", type=int, default=None)
    ppl.add_argument("--batch-size", type=int, default=1)
    ppl.add_argument("--max-tokens", type=int, default=None)
    ppl.set_defaults(func=cmd_eval_ppl)

    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub, ev_sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    import hf_ext  # noqa: F401  (registers quantization methods)

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError, ImportError) as e:  # the one error boundary: one line, exit 2, no traceback
        if os.environ.get("HF_EXT_DEBUG"):
            raise
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"hf-ext: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
