"""``hf-ext bench tiered-cache``: in-memory floor vs the tiered cache on a random-weight OPT shape."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction, eval_sub: argparse._SubParsersAction) -> None:
    """Add ``hf-ext bench tiered-cache`` (creating ``hf-ext bench`` if no one has)."""
    bench = sub.choices.get("bench")
    if bench is None:
        bench = sub.add_parser("bench", help="quick benchmarks")
        bench.add_subparsers(dest="bench_what", required=True)
    bench_sub = next(a for a in bench._actions if isinstance(a, argparse._SubParsersAction))
    from .bench import SHAPES

    p = bench_sub.add_parser("tiered-cache", help="tiered cache vs in-memory training steps (random-weight OPT)")
    p.add_argument("--shape", default="tiny", choices=sorted(SHAPES))
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--nvme-path", default=None, help="folder on the disk to test (default: the temp folder)")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import quick_comparison

    if args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}.")
    res = quick_comparison(args.shape, args.steps, args.nvme_path)
    floor, ours = res["floor"], res["ours"]
    s = ours.stats
    print(f"in-memory: {floor.median:.3f} s/step; tiered: {ours.median:.3f} s/step ({ours.median / floor.median:.2f}x)"
          f"; device hit rate {s['device_hit_rate']:.1%}; stall {s['stall_per_step']:.3f} s/step; "
          f"NVMe {s['nvme_bytes_per_step'] / 2**20:.1f} MiB/step ({s['io_mode']}); "
          f"losses equal: {ours.losses == floor.losses}")
    return 0
