"""``hf-ext bench tool-cl``: one continual run (tool-use or no-tool form, with or without replay) on the Tool-CL
sequence, printing the accuracy matrix and the metrics. ``benchmarks/tool_cl.py`` runs the full comparison."""

from __future__ import annotations

import argparse


def _bench_subparsers(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The ``hf-ext bench`` sub-subparsers, creating ``bench`` if no other capability did yet."""
    bench = sub.choices.get("bench")
    if bench is None:
        bench = sub.add_parser("bench", help="run a capability's benchmark")
        return bench.add_subparsers(dest="bench_what", required=True)
    return next(a for a in bench._actions if isinstance(a, argparse._SubParsersAction))


def register(sub: argparse._SubParsersAction, eval_sub: argparse._SubParsersAction) -> None:
    """Add ``hf-ext bench tool-cl``."""
    p = _bench_subparsers(sub).add_parser("tool-cl", help="continual learning of tool use (accuracy matrix, BWT, "
                                          "FWT, forgetting)")
    p.add_argument("--model", default="default", help="model path or Hub id ('default': Gemma 3 270M)")
    p.add_argument("--tasks", type=int, default=4, help="tasks of the built-in schedule (at most 6)")
    p.add_argument("--replay", type=int, default=200, help="replay buffer size (0 = no replay)")
    p.add_argument("--strategy", default="reservoir", choices=("reservoir", "class_balanced", "none"))
    p.add_argument("--no-tools", action="store_true", help="train and score the no-tool form (direct answers)")
    p.add_argument("--train-size", type=int, default=12, help="training examples per task")
    p.add_argument("--test-size", type=int, default=12, help="test examples per task")
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate (LoRA r=8 on every linear)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0, help="seed of the data, the replay sampling and training")
    p.add_argument("--output", default=None, help="write the matrix, baseline and metrics to this JSON file")
    p.set_defaults(func=cmd_bench_tool_cl)


def cmd_bench_tool_cl(args: argparse.Namespace) -> int:
    import tempfile

    from transformers import TrainingArguments

    from ..common.models import load_model
    from ..common.utils import atomic_write_json
    from .benchmark import ToolCLBenchmark
    from .replay import ReplayConfig
    from .trainer import ContinualTrainer

    bench = ToolCLBenchmark(num_tasks=args.tasks, seed=args.seed, train_size=args.train_size,
                            test_size=args.test_size)
    replay = ReplayConfig(size=args.replay, strategy=args.strategy, seed=args.seed)
    model, tokenizer = load_model(args.model)
    targs = TrainingArguments(output_dir=tempfile.mkdtemp(prefix="tool_cl_"), num_train_epochs=args.epochs,
                              per_device_train_batch_size=args.batch_size, learning_rate=args.lr,
                              lr_scheduler_type="constant", save_strategy="no", report_to="none", seed=args.seed,
                              disable_tqdm=True, logging_steps=50)
    trainer = ContinualTrainer(model, tokenizer, bench, replay=replay, args=targs, tool_use=not args.no_tools)
    res = trainer.run()
    form = "no-tool" if args.no_tools else "tool-use"
    print(f"{form}, replay {args.replay if replay.enabled else 0} ({args.strategy}), {args.tasks} tasks, "
          f"{args.train_size} train / {args.test_size} test examples each")
    print("untrained: " + " ".join(f"{v:.2f}" for v in res.baseline))
    for i, row in enumerate(res.matrix):
        print(f"after {i}:   " + " ".join(f"{v:.2f}" for v in row))
    for k, v in res.metrics.items():
        print(f"{k}: {'-' if v is None else f'{v:+.3f}'}")
    if args.output:
        atomic_write_json(args.output, {"args": vars(args) | {"func": None}, **res.to_dict()})
        print(f"wrote {args.output}")
    return 0
