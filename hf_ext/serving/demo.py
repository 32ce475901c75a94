"""``hf-ext demo`` row: the simulator, driven by a profile measured right now on the demo's model as three levels
(the cheapest two share its weights; as ``hf_ext.serving.levels.DEFAULT_LEVELS``), availability of the learned
router vs static best quality at a high request rate (4x the best level's capacity). A quick profile: batch sizes 1
and 8, 8 new tokens, one repeat; ``benchmarks/serving.py`` measures the full one."""

from __future__ import annotations


def demo_levels(model, tokenizer):
    from ..common.arch import get_blocks
    from .levels import HFModelLevel, truncated_view

    n, vocab = len(get_blocks(model)), model.get_output_embeddings().out_features
    cheap = (max(1, 2 * n // 3), min(vocab, 8192))
    mid = min(vocab, 32768)
    return [HFModelLevel(truncated_view(model, *cheap), tokenizer, f"{cheap[0]}L-v{cheap[1]}"),
            HFModelLevel(truncated_view(model, None, mid), tokenizer, f"v{mid}"),
            HFModelLevel(model, tokenizer, "full")]


def demo_rows(model, tokenizer, ctx) -> list:
    import time

    from ..common.data import load_text
    from ..common.demo import DemoRow
    from .dqn import DQNConfig
    from .policies import baselines
    from .profiler import measure_profile
    from .simulator import SimulatorConfig
    from .training import run_policy, train_router

    start = time.perf_counter()
    docs = [d for d in load_text(ctx.eval_data, split="eval") if len(d) > 600]
    tasks = {"docs-a": [docs[0][:600]], "docs-b": [docs[-1][:600]]}
    levels = demo_levels(model, tokenizer)
    profile = measure_profile(levels, tasks, batch_sizes=(1, 8), max_new_tokens=8, repeats=1, progress=False)
    best = profile.best_level()
    deadline = 4.0 * profile.levels[best].service_time(1)
    cap = profile.capacity(best, 8)
    cfg = SimulatorConfig(rate=(0.25 * cap, 2 * profile.capacity(profile.fastest_level(), 8)), duration_s=60,
                          deadline_s=deadline)
    router, _ = train_router(profile, cfg, DQNConfig(total_steps=8000, seed=0), progress=False)
    high = 4.0 * cap
    evals = SimulatorConfig(duration_s=60, deadline_s=deadline)
    ours = [run_policy(profile, evals, router, seed=s, rate=high)["availability"] for s in range(3)]
    static = [run_policy(profile, evals, baselines(profile, 8)["static_best"], seed=s, rate=high)["availability"]
              for s in range(3)]
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    return [DemoRow("serving (learned router)", f"{len(levels)} levels, {high:.1f} req/s (4x static capacity)",
                    "availability", mean(ours), baseline=mean(static),
                    note=f"baseline: static best; simulator on a profile measured now; deadline {deadline:.1f} s; "
                         f"{time.perf_counter() - start:.0f} s")]
