"""``hf-ext serve`` (the server), ``serve profile``, ``serve train-router``, ``hf-ext bench serve`` (load)."""

from __future__ import annotations

import argparse
import json

SERVE_MODULES = {"fastapi": "fastapi", "uvicorn": "uvicorn", "httpx": "httpx", "prometheus_client": "prometheus-client",
                 "gymnasium": "gymnasium"}


def require_serve(*modules: str) -> None:
    """One clear ImportError naming the extra when a serving dependency is missing."""
    from ..common.import_utils import is_available

    missing = [SERVE_MODULES[m] for m in modules or SERVE_MODULES if not is_available(m)]
    if missing:
        raise ImportError(f"hf-ext serve needs {', '.join(missing)}; install them with: pip install 'hf-ext[serve]'")


def _add_level_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--level", action="append", default=None, metavar="[NAME=]SPEC",
                   help="a quality level, lowest quality first: model path / Hub id / 'default', PATH:BITS of an "
                   "any-precision checkpoint, http://host:port/v1 (OpenAI-compatible), tiny:FAMILY (tests); "
                   "SPEC@layers=K / SPEC@vocab=N: its first K blocks / first N token ids only (shared weights). "
                   "Default: the embedded model three ways (hf_ext.serving.levels.DEFAULT_LEVELS)")


def cmd_serve(args: argparse.Namespace) -> int:
    require_serve("fastapi", "uvicorn", "httpx", "prometheus_client")
    from .levels import DEFAULT_LEVELS, parse_levels
    from .profile import ServingProfile
    from .router import Router
    from .server import BestEffortServer, ServerConfig, serve

    cfg = ServerConfig(host=args.host, port=args.port, max_batch=args.max_batch, queue_bound=args.queue_bound,
                       default_deadline_s=args.deadline, max_tokens_limit=args.max_tokens_limit,
                       max_prompt_tokens=args.max_prompt_tokens, default_task=args.default_task)
    profile = ServingProfile.load(args.profile) if args.profile else None
    router = Router.load(args.router) if args.router else None
    if router is not None and profile is None:
        raise ValueError("--router needs the --profile it was trained on.")
    levels = parse_levels(args.level or list(DEFAULT_LEVELS))
    server = BestEffortServer(levels, profile=profile, router=router, config=cfg)
    print(f"hf-ext serve: {len(levels)} levels {[lv.name for lv in levels]} on http://{cfg.host}:{cfg.port} "
          f"(router: {'learned' if router else 'queue-length threshold'})", flush=True)
    serve(server, log_level=args.log_level)
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .levels import DEFAULT_LEVELS, parse_levels
    from .profiler import default_tasks, measure_profile

    if Path(args.out).exists() and not args.overwrite:
        raise FileExistsError(f"{args.out!r} exists; pass --overwrite to replace it.")
    tasks = default_tasks(args.tasks, n_tasks=args.n_tasks, texts_per_task=args.texts_per_task)
    levels = parse_levels(args.level or list(DEFAULT_LEVELS))
    profile = measure_profile(levels, tasks, batch_sizes=tuple(args.batch_sizes), max_new_tokens=args.max_tokens,
                              repeats=args.repeats)
    profile.save(args.out)
    for lv in profile.levels:
        times = ", ".join(f"{b}: {t:.3f}s" for b, t in zip(lv.batch_sizes, lv.service_s))
        print(f"{lv.name}: {times}; quality {json.dumps({k: round(v, 3) for k, v in lv.quality.items()})}")
    print(f"wrote {args.out}")
    return 0


def cmd_train_router(args: argparse.Namespace) -> int:
    require_serve("gymnasium")
    from .dqn import DQNConfig
    from .profile import ServingProfile
    from .simulator import SimulatorConfig
    from .training import train_router

    profile = ServingProfile.load(args.profile)
    sim = SimulatorConfig(pattern=args.pattern, rate=(args.rate_low, args.rate_high), burstiness=args.burstiness,
                          duration_s=args.episode_s, deadline_s=args.deadline, max_batch=args.max_batch,
                          queue_bound=args.queue_bound, reward=args.reward)
    from ..common.utils import check_output_dir

    check_output_dir(args.out, args.overwrite)
    router, log = train_router(profile, sim, DQNConfig(total_steps=args.steps, seed=args.seed))
    router.save(args.out, overwrite=args.overwrite)
    print(f"trained over {log['episodes']} episodes; saved the router to {args.out}")
    return 0


def cmd_bench_serve(args: argparse.Namespace) -> int:
    require_serve("httpx")
    from .loadgen import LoadConfig, run_load

    cfg = LoadConfig(url=args.url, rate=args.rate, burstiness=args.burstiness, duration_s=args.duration,
                     max_requests=args.max_requests, max_tokens=args.max_tokens, deadline_s=args.deadline,
                     tasks=args.task, timeout_s=args.timeout, seed=args.seed, model=args.model)
    summary = run_load(cfg)
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=2))
    if args.output:
        from ..common.utils import atomic_write_json

        atomic_write_json(args.output, summary)
    return 0


def register(sub: argparse._SubParsersAction, eval_sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="best-effort OpenAI-compatible server (learned routing between quality levels)")
    _add_level_args(p)
    p.add_argument("--profile", default=None, help="measured profile JSON (hf-ext serve profile)")
    p.add_argument("--router", default=None, help="trained router folder (hf-ext serve train-router)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--queue-bound", type=int, default=64)
    p.add_argument("--deadline", type=float, default=10.0, help="default deadline, seconds")
    p.add_argument("--default-task", default=None, help="task of requests naming none (default: first profiled)")
    p.add_argument("--max-tokens-limit", type=int, default=512)
    p.add_argument("--max-prompt-tokens", type=int, default=2048)
    p.add_argument("--log-level", default="warning")
    p.set_defaults(func=cmd_serve)
    ssub = p.add_subparsers(dest="serve_command")

    pr = ssub.add_parser("profile", help="measure each level's service time per batch size and quality per task")
    _add_level_args(pr)
    pr.add_argument("--out", required=True, help="profile JSON to write")
    pr.add_argument("--overwrite", action="store_true")
    pr.add_argument("--tasks", default="pydocs", help="text source the tasks are cut from")
    pr.add_argument("--n-tasks", type=int, default=2)
    pr.add_argument("--texts-per-task", type=int, default=8)
    pr.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8])
    pr.add_argument("--max-tokens", type=int, default=16)
    pr.add_argument("--repeats", type=int, default=3)
    pr.set_defaults(func=cmd_profile)

    tr = ssub.add_parser("train-router", help="train the Double-DQN router in the simulator")
    tr.add_argument("--profile", required=True)
    tr.add_argument("--out", required=True, help="router folder to write")
    tr.add_argument("--overwrite", action="store_true")
    tr.add_argument("--pattern", default="poisson", choices=("poisson", "gamma", "diurnal"))
    tr.add_argument("--rate-low", type=float, default=0.1)
    tr.add_argument("--rate-high", type=float, default=20.0)
    tr.add_argument("--burstiness", type=float, default=1.0)
    tr.add_argument("--episode-s", type=float, default=60.0)
    tr.add_argument("--deadline", type=float, default=10.0)
    tr.add_argument("--max-batch", type=int, default=8)
    tr.add_argument("--queue-bound", type=int, default=64)
    tr.add_argument("--reward", default="hard", choices=("hard", "soft"))
    tr.add_argument("--steps", type=int, default=20000)
    tr.add_argument("--seed", type=int, default=0)
    tr.set_defaults(func=cmd_train_router)

    bench = sub.choices.get("bench") or sub.add_parser("bench", help="benchmarks against running services")
    bsub = next((a for a in bench._actions if isinstance(a, argparse._SubParsersAction)), None) or \
        bench.add_subparsers(dest="bench_command", required=True)
    b = bsub.add_parser("serve", help="open-loop load generator for an OpenAI-compatible server")
    b.add_argument("--url", default="http://127.0.0.1:8000")
    b.add_argument("--rate", type=float, default=1.0, help="requests/s")
    b.add_argument("--burstiness", type=float, default=1.0, help="gamma shape (1 = Poisson)")
    b.add_argument("--duration", type=float, default=30.0, help="seconds of sending")
    b.add_argument("--max-requests", type=int, default=1000)
    b.add_argument("--max-tokens", type=int, default=16)
    b.add_argument("--deadline", type=float, default=None)
    b.add_argument("--task", action="append", default=None, help="task id(s), used in turn")
    b.add_argument("--model", default=None, help="pin a level by name")
    b.add_argument("--timeout", type=float, default=60.0)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--output", default=None, help="write the summary JSON here")
    b.set_defaults(func=cmd_bench_serve)
