"""Tool-CL benchmark: does a model that calls tools learn a changing task sequence faster and forget less than one
that answers from its parameters, especially with a replay buffer? (Huang et al., 2024, arXiv 2404.09339.)

Four settings, each a :class:`hf_ext.tool_cl.ContinualTrainer` run over the same task sequence (the first
``--tasks`` of the built-in schedule: tools appear, ``add`` is renamed ``plus``, ``convert`` changes signature,
``days_between`` changes behaviour): {tool-use, no-tool} x {reservoir replay of ``--replay`` examples, none}. The
default model (Gemma 3 270M) with LoRA r=8 on every linear layer, a fresh copy per setting. Settings are run
interleaved within each seed (the order rotates), for ``--seeds`` seeds; a seed changes the data, the replay sample
and the training order. The untrained row (the FWT baseline) is measured once per seed and form and shared by the
replay / no-replay runs, which start from the same model.

Reported per setting: the accuracy matrix (mean over seeds), ACC / learning accuracy / BWT / FWT / forgetting
(median and min-max over seeds), and paired per-seed differences of tool + replay against each other setting. The
findings sentence is computed from those differences: "consistent" means the same sign in every seed.

    .venv/bin/python benchmarks/tool_cl.py --smoke            # tiny random model, seconds; writes benchmarks/out/
    .venv/bin/python benchmarks/tool_cl.py                    # the published CPU run (~8-10 min, DEFAULTS below)
    .venv/bin/python benchmarks/tool_cl.py --device cuda      # GPU variant: 6 tasks, more examples and seeds
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from _report import table, write_section  # noqa: E402

# The CPU preset is sized for about 8-10 minutes on the idle 2-core machine (an estimate from the CPU time of single
# training steps and decoding steps of the default model, not a timed run): per seed about 33 tool-form training
# steps of 4-8 sequences, 33 no-tool ones, and 9 + 9 generations over 24 prompts. 8 train / 6 test examples per
# task are coarse (accuracy in steps of 1/6); the fuller CPU run, about 25-30 minutes:
#   benchmarks/tool_cl.py --seeds 3 --train-size 12 --test-size 12 --replay 12
DEFAULTS = {
    "cpu": dict(tasks=4, train_size=8, test_size=6, epochs=3.0, replay=8, seeds=2, batch_size=4, lr=1e-3),
    "cuda": dict(tasks=6, train_size=128, test_size=64, epochs=3.0, replay=128, seeds=5, batch_size=16, lr=5e-4),
    "smoke": dict(tasks=2, train_size=4, test_size=2, epochs=1.0, replay=2, seeds=2, batch_size=4, lr=1e-2,
                  max_new_tokens=8),
}
SETTINGS = [("tool", True, True), ("tool", True, False), ("no-tool", False, True), ("no-tool", False, False)]
METRICS = ("average_accuracy", "learning_accuracy", "backward_transfer", "forward_transfer", "forgetting")


def label(tool_use: bool, replay: bool) -> str:
    return f"{'tool' if tool_use else 'no-tool'} + {'replay' if replay else 'no replay'}"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny random Llama, tiny sizes; writes benchmarks/out/")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--model", default="default")
    for k in ("tasks", "train_size", "test_size", "replay", "seeds", "batch_size"):
        ap.add_argument("--" + k.replace("_", "-"), type=int, default=None)
    ap.add_argument("--epochs", type=float, default=None)
    ap.add_argument("--max-new-tokens", type=int, default=None, help="default: longest completion + EOS")
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--name", default=None, help="results name (default tool_cl, or tool_cl_gpu with cuda)")
    args = ap.parse_args(argv)
    preset = DEFAULTS["smoke" if args.smoke else args.device]
    preset.setdefault("max_new_tokens", None)
    for k, v in preset.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.name = args.name or ("tool_cl_gpu" if args.device == "cuda" else "tool_cl")
    return args


def load(args):
    from hf_ext.common.models import load_model, tiny_model

    if args.smoke:
        return tiny_model("llama")
    model, tok = load_model(args.model)
    return model.to(args.device), tok


def one_run(base, tok, args, seed: int, tool_use: bool, replay: bool, baseline, out_dir: str) -> dict:
    from transformers import TrainingArguments

    from hf_ext.tool_cl import ContinualTrainer, ReplayConfig, ToolCLBenchmark

    bench = ToolCLBenchmark(num_tasks=args.tasks, seed=seed, train_size=args.train_size, test_size=args.test_size)
    targs = TrainingArguments(output_dir=out_dir, num_train_epochs=args.epochs,
                              per_device_train_batch_size=args.batch_size, learning_rate=args.lr,
                              lr_scheduler_type="constant", save_strategy="no", report_to="none", seed=seed,
                              disable_tqdm=True, logging_steps=1000, use_cpu=args.device == "cpu")
    rcfg = ReplayConfig(size=args.replay if replay else 0, strategy="reservoir" if replay else "none", seed=seed)
    trainer = ContinualTrainer(copy.deepcopy(base), tok, bench, replay=rcfg, args=targs, tool_use=tool_use,
                               eval_batch_size=64, max_new_tokens=args.max_new_tokens,
                               progress=False)
    t = time.perf_counter()
    res = trainer.run(baseline=baseline)
    return {**res.to_dict(), "seed": seed, "tool_use": tool_use, "replay": replay,
            "wall_seconds": time.perf_counter() - t}


def baseline_row(base, tok, args, seed: int, tool_use: bool) -> list[float]:
    from hf_ext.tool_cl import ContinualTrainer, ToolCLBenchmark

    bench = ToolCLBenchmark(num_tasks=args.tasks, seed=seed, train_size=args.train_size, test_size=args.test_size)
    trainer = ContinualTrainer(base, tok, bench, lora=False, tool_use=tool_use, eval_batch_size=64,
                               max_new_tokens=args.max_new_tokens, progress=False)
    return [s.accuracy for s in trainer.evaluate_all()]


def summarize(runs: list[dict]) -> dict:
    """Per setting: mean matrix and baseline, and each metric's per-seed values."""
    out = {}
    for _, tool_use, replay in SETTINGS:
        rs = sorted((r for r in runs if r["tool_use"] == tool_use and r["replay"] == replay), key=lambda r: r["seed"])
        t = len(rs[0]["matrix"])
        mean = [[statistics.fmean(r["matrix"][i][j] for r in rs) for j in range(t)] for i in range(t)]
        base = [statistics.fmean(r["baseline"][j] for r in rs) for j in range(t)]
        out[label(tool_use, replay)] = {"matrix": mean, "baseline": base, "seeds": [r["seed"] for r in rs],
                                        "metrics": {m: [r["metrics"][m] for r in rs] for m in METRICS},
                                        "seconds": [r["wall_seconds"] for r in rs]}
    return out


def _fmt(vals) -> str:
    vals = [v for v in vals if v is not None]
    if not vals:
        return "-"
    return f"{statistics.median(vals):+.3f} [{min(vals):+.3f}, {max(vals):+.3f}]"


def findings(summary: dict) -> list[str]:
    """Paired per-seed differences of tool + replay against each other setting, with their sign consistency."""
    ref = summary[label(True, True)]["metrics"]
    lines = []
    checks = (("forgetting", "forgets less", -1), ("backward_transfer", "has a higher BWT", 1),
              ("learning_accuracy", "learns each task better (learning accuracy)", 1),
              ("forward_transfer", "starts each new task better (FWT)", 1),
              ("average_accuracy", "ends with a higher average accuracy", 1))
    for other in (label(True, False), label(False, True), label(False, False)):
        om = summary[other]["metrics"]
        for m, claim, sign in checks:
            diffs = [a - b for a, b in zip(ref[m], om[m]) if a is not None and b is not None]
            if not diffs:
                continue
            better, worse = sum(sign * d > 0 for d in diffs), sum(sign * d < 0 for d in diffs)
            n = len(diffs)
            verdict = ("yes, in every seed" if better == n else "no: worse in every seed" if worse == n else
                       "no difference in any seed" if better == worse == 0 else
                       f"mixed (better in {better}, worse in {worse} of {n} seeds)")
            lines.append(f"- vs {other}: tool + replay {claim}? {verdict}; paired difference "
                         f"{_fmt(diffs)} (median [min, max] over {len(diffs)} seeds)")
    return lines


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(summary), figsize=(4 * len(summary), 3.4), sharey=True)
    for ax, (name, s) in zip(axes, summary.items()):
        t = len(s["matrix"])
        for j in range(t):
            ys = [s["baseline"][j]] + [s["matrix"][i][j] for i in range(t)]
            ax.plot(range(-1, t), ys, marker="o", label=f"task {j}")
            ax.axvline(j, color="0.9", zorder=0)
        ax.set_title(name)
        ax.set_xticks(range(-1, t), ["untrained"] + [f"after {i}" for i in range(t)], rotation=30)
        ax.set_ylim(-0.05, 1.05)
    axes[0].set_ylabel(f"accuracy (mean of {len(s['seeds'])} seeds)")
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(args, summary: dict, runs: list[dict], wall: float, png: Path) -> str:
    parts = [f"Sizes: {args.tasks} tasks, {args.train_size} train / {args.test_size} test examples per task, "
             f"{args.epochs:g} epochs per task, batch {args.batch_size}, LR {args.lr:g} (constant), LoRA r=8 / "
             f"alpha 16 on every linear layer, reservoir replay of {args.replay} examples (the whole buffer joins "
             f"each task's training set), greedy decoding, exact match; {args.seeds} seeds; {wall:.0f} s in total."]
    rows = []
    for name, s in summary.items():
        rows.append([name] + [_fmt(s["metrics"][m]) for m in METRICS] + [f"{statistics.fmean(s['seconds']):.0f}"])
    parts.append(table(["setting", "ACC", "learning acc.", "BWT", "FWT", "forgetting", "s / run"], rows))
    parts.append("Median [min, max] over seeds. BWT / FWT / forgetting: GEM / Chaudhry, T-1 denominators "
                 "(see the `tool_cl` metric card).")
    for name, s in summary.items():
        t = len(s["matrix"])
        hdr = ["after task"] + [f"task {j}" for j in range(t)]
        body = [["untrained"] + [f"{v:.2f}" for v in s["baseline"]]]
        body += [[str(i)] + [f"{v:.2f}" for v in s["matrix"][i]] for i in range(t)]
        parts.append(f"Accuracy matrix, {name} (mean of {len(s['seeds'])} seeds):\n\n" + table(hdr, body))
    parts.append(f"![learning curves]({png.name})")
    parts.append("Findings (computed from the runs above):\n\n" + "\n".join(findings(summary)))
    return "\n\n".join(parts)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda needs a GPU")
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1))) if args.device == "cpu" else None
    t0 = time.perf_counter()
    base, tok = load(args)
    runs: list[dict] = []
    work = tempfile.mkdtemp(prefix="tool_cl_bench_")
    for seed in range(args.seeds):
        baselines = {tu: baseline_row(base, tok, args, seed, tu) for tu in (True, False)}
        order = SETTINGS[seed % 4:] + SETTINGS[: seed % 4]  # interleaved, rotating order
        for _, tool_use, replay in order:
            r = one_run(base, tok, args, seed, tool_use, replay, baselines[tool_use], work)
            runs.append(r)
            print(f"[tool_cl] seed {seed} {label(tool_use, replay)}: ACC {r['metrics']['average_accuracy']:.3f} "
                  f"forgetting {r['metrics']['forgetting']} ({r['wall_seconds']:.0f} s)", flush=True)
    wall = time.perf_counter() - t0
    summary = summarize(runs)
    out_dir = Path(__file__).resolve().parent / ("out" if args.smoke else "results")
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / f"{args.name}{'_smoke' if args.smoke else ''}_curves.png"
    plot(summary, png)
    body = report(args, summary, runs, wall, png)
    raw = out_dir / f"{args.name}{'_smoke' if args.smoke else ''}.json"
    tmp = raw.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"args": vars(args), "runs": runs, "summary": summary}, indent=1))
    os.replace(tmp, raw)
    if args.smoke:
        (out_dir / "tool_cl_smoke.md").write_text(body + "\n")
        print(body)
        print(f"\nsmoke run: wrote {out_dir / 'tool_cl_smoke.md'} ({wall:.0f} s)")
        return 0
    title = f"Tool-CL: tool use x replay under continual learning (benchmarks/tool_cl.py, {args.device})"
    path = write_section(args.name, title, body, packages=("peft", "datasets", "evaluate"))
    print(body)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
