"""Learned best-effort serving (Jha et al., 2024): router vs static best / static fastest / queue threshold.

    python benchmarks/serving.py            # published: default model three ways, ~7 min on an idle 2-core CPU
    python benchmarks/serving.py --smoke    # tiny models, end to end in about a minute; writes benchmarks/out/

1. Profile: every level's service time per batch size and quality per task, measured here (hf-ext serve profile).
2. Simulator (the main result): Double-DQN routers (hard and soft reward) trained on Poisson arrivals over a rate
   range, then every policy on the same traces (same seed and rate), several seeds, a rate sweep: availability
   (requests meeting their deadline) and normalised quality vs rate, the paper's three ratios (definitions in
   ``hf_ext.serving.training.paper_ratios``), and robustness under shifted arrivals (gamma bursts, a diurnal curve)
   and a shifted task mix.
3. Live: the real server on 127.0.0.1 with the router, the load generator at a low and a high rate; measured
   attainment and quality next to the simulator's prediction for the same workload (error in %).
4. Overload: 10x the router's sustainable rate for a bounded time: every request answered (200 / 429 / 503), none
   lost; server memory (RSS) sampled throughout.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # this checkout's hf_ext first
from _report import table, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ("static_best", "static_fastest", "threshold", "router", "router_soft")


T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[serving {time.perf_counter() - T0:6.0f} s] {msg}", flush=True)


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny models, short runs (numbers meaningless)")
    ap.add_argument("--levels", nargs="+", default=None, help="level specs, lowest quality first")
    ap.add_argument("--seeds", type=int, default=None, help="simulator seeds per (policy, rate)")
    ap.add_argument("--steps", type=int, default=None, help="Double-DQN training steps")
    ap.add_argument("--deadline-factor", type=float, default=4.0,
                    help="deadline = this x the best level's single-request service time, at least 0.25 s (ours)")
    ap.add_argument("--live-s", type=float, default=None, help="seconds of each live load run")
    ap.add_argument("--skip-live", action="store_true")
    return ap.parse_args()


def measure(levels_specs, smoke: bool):
    from hf_ext.serving.levels import parse_levels
    from hf_ext.serving.profiler import default_tasks, measure_profile

    if smoke:
        words = "the model reads a token and predicts the next one while the cache keeps keys".split()
        rng = np.random.default_rng(0)
        tasks = {f"t{k}": [" ".join(rng.choice(words, 120)) for _ in range(2)] for k in range(2)}
    else:
        tasks = default_tasks("pydocs", n_tasks=2, texts_per_task=8)
    levels = parse_levels(levels_specs)
    t = time.perf_counter()
    prof = measure_profile(levels, tasks, batch_sizes=(1, 2, 4, 8), max_new_tokens=4 if smoke else 16,
                           repeats=1 if smoke else 3)
    prof.meta["seconds"] = time.perf_counter() - t
    log(f"profiled {len(levels)} levels in {prof.meta['seconds']:.0f} s")
    prof.meta["levels"] = list(levels_specs)
    return prof


def sim_config(profile, args, **kw):
    from hf_ext.serving.simulator import SimulatorConfig

    best = profile.levels[profile.best_level()].service_time(1)
    deadline = max(args.deadline_factor * best, 0.25)  # the floor only matters for tiny models (HTTP overhead)
    base = dict(pattern="poisson", duration_s=60.0 if not args.smoke else 20.0, deadline_s=deadline,
                max_batch=8, queue_bound=64, max_requests=3000)
    return SimulatorConfig(**{**base, **kw})


def rate_grid(profile, cfg, n: int) -> list[float]:
    lo = 0.25 * profile.capacity(profile.best_level(), cfg.max_batch)
    hi = 2.0 * profile.capacity(profile.fastest_level(), cfg.max_batch)
    return [float(x) for x in np.geomspace(lo, hi, n)]


def simulate(profile, args, out_dir: Path) -> tuple[str, dict]:
    from hf_ext.serving.dqn import DQNConfig
    from hf_ext.serving.policies import baselines
    from hf_ext.serving.training import paper_ratios, sweep, train_router

    seeds = list(range(args.seeds or (2 if args.smoke else 4)))
    steps = args.steps or (1500 if args.smoke else 20000)
    train_cfg = sim_config(profile, args)
    rates = rate_grid(profile, train_cfg, 6 if args.smoke else 10)
    train_cfg.rate = (rates[0], rates[-1])
    t = time.perf_counter()
    router, _ = train_router(profile, train_cfg, DQNConfig(total_steps=steps, seed=0))
    soft, _ = train_router(profile, sim_config(profile, args, rate=(rates[0], rates[-1]), reward="soft"),
                           DQNConfig(total_steps=steps, seed=0))
    train_s = time.perf_counter() - t
    log(f"trained two routers in {train_s:.0f} s")
    router.save(out_dir / "router", overwrite=True)
    pols = {**baselines(profile, train_cfg.max_batch), "router": router, "router_soft": soft}
    eval_cfg = sim_config(profile, args)
    t = time.perf_counter()
    res = sweep(profile, eval_cfg, pols, rates, seeds)
    sweep_s = time.perf_counter() - t
    log(f"rate sweep in {sweep_s:.0f} s")
    ratios = paper_ratios(res)

    def med(name, r, key):
        v = [x[key] for x in res[name][r]]
        return f"{np.median(v):.3f} [{min(v):.2f}-{max(v):.2f}]"

    rows = [[f"{r:.2f}"] + [med(p, r, "availability") for p in POLICIES] for r in rates]
    qrows = [[f"{r:.2f}"] + [med(p, r, "normalized_quality") for p in POLICIES] for r in rates]
    shares = [[f"{r:.2f}"] + [" / ".join(f"{s:.2f}" for s in np.mean([x["level_share"] for x in res["router"][r]],
                                                                        axis=0))] for r in rates]
    shifts = {
        "gamma bursts (burstiness 0.25)": dict(pattern="gamma", burstiness=0.25),
        "diurnal curve (Azure-style)": dict(pattern="diurnal"),
        "task mix 90/10 (trained 50/50)": dict(task_mix=[0.9] + [0.1 / max(1, len(profile.tasks) - 1)] * (
            len(profile.tasks) - 1)),
    }
    shift_rows, shift_ratios = [], {}
    for label, kw in shifts.items():
        cfg = sim_config(profile, args, **kw)
        sres = sweep(profile, cfg, pols, rates, seeds)
        shift_ratios[label] = paper_ratios(sres)
        high = rates[len(rates) * 2 // 3]
        shift_rows.append([label, f"{high:.2f}"] + [
            f"{np.median([x['availability'] for x in sres[p][high]]):.3f} / "
            f"{np.median([x['normalized_quality'] for x in sres[p][high]]):.3f}" for p in POLICIES]
            + [f"{shift_ratios[label]['rate_ratio']:.1f}"])
    log("robustness sweeps done")
    plot(res, rates, out_dir)

    def rr(x):
        return "inf (static never)" if x == float("inf") else f"{x:.2f}"

    body = f"""### Profile (measured here)

{table(["level", "service s at batch 1 / 2 / 4 / 8", "cv", "quality per task", "MiB"],
       [[lv.name, " / ".join(f"{t:.3f}" for t in lv.service_s), f"{lv.service_cv:.3f}",
         ", ".join(f"{k}: {v:.3f}" for k, v in lv.quality.items()),
         "-" if lv.memory_mib is None else f"{lv.memory_mib:.0f}"] for lv in profile.levels])}

Quality: {profile.meta['quality']}; {profile.max_new_tokens} new tokens per request; profiling took
{profile.meta['seconds']:.0f} s. Deadline {eval_cfg.deadline_s:.2f} s ({args.deadline_factor}x the best level's
single-request time, at least 0.25 s), batches up to {eval_cfg.max_batch}, queues up to {eval_cfg.queue_bound}.

### Simulator: availability vs rate (median [min-max] over {len(seeds)} seeds, {eval_cfg.duration_s:.0f} s
Poisson traces)

Two routers trained in {train_s:.0f} s ({steps} Double-DQN steps each, hard and soft reward) on rates
{rates[0]:.2f}-{rates[-1]:.2f}/s; the sweep of every policy on identical traces took {sweep_s:.0f} s.

{table(["rate/s", *POLICIES], rows)}

Normalised quality (reward / reward of every request at its best level in time):

{table(["rate/s", *POLICIES], qrows)}

Router's level shares (lowest quality first): {table(["rate/s", "share"], shares)}

### The paper's three figures, computed our way

- Sustainable rate (median availability >= 0.99): router {ratios['sustainable_rate']['router']:.2f}/s,
  static best {ratios['sustainable_rate']['static_best']:.2f}/s: **{rr(ratios['rate_ratio'])}x** (paper: > 10x).
- Runs (rate x seed) at >= 96 % of peak quality: router {ratios['above_96']['router']:.2f}, static best
  {ratios['above_96']['static_best']:.2f}: **{rr(ratios['above_96_ratio'])}x** (paper: 4.1x).
- At >= 98 %: router {ratios['above_98']['router']:.2f}, static best {ratios['above_98']['static_best']:.2f}:
  **{rr(ratios['above_98_ratio'])}x** (paper: 2.3x).

These depend on the rate grid (0.25x the best level's capacity to 2x the fastest level's, geometric): the paper's
grid and trace are not public, so the figures are comparable in kind, not in value.

### Robustness: arrivals and task mix shifted from training (availability / normalised quality at the rate
shown; last column: rate ratio over the whole sweep)

{table(["shift", "rate/s", *POLICIES, "rate ratio"], shift_rows)}

![availability](serving_availability.png)
"""
    return body, {"ratios": ratios, "shift_ratios": shift_ratios, "router": router, "rates": rates,
                  "eval_cfg": eval_cfg, "sweep": {p: {str(r): v for r, v in d.items()} for p, d in res.items()}}


def plot(res, rates, out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name in POLICIES:
        for ax, key in zip(axes, ("availability", "normalized_quality")):
            med = [np.median([x[key] for x in res[name][r]]) for r in rates]
            ax.plot(rates, med, marker="o", label=name)
    for ax, key in zip(axes, ("availability (deadline met)", "normalised quality")):
        ax.set_xscale("log")
        ax.set_xlabel("request rate (req/s)")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out_dir / "serving_availability.png", dpi=110)
    plt.close(fig)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RssSampler(threading.Thread):
    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.samples, self.stop = pid, [], threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                txt = Path(f"/proc/{self.pid}/status").read_text()
                self.samples.append(int(next(x for x in txt.splitlines() if x.startswith("VmRSS")).split()[1]) / 1024)
            except (OSError, StopIteration):
                pass
            time.sleep(0.5)


def live(profile, sim, args, out_dir: Path) -> str:
    import httpx

    from hf_ext.serving.loadgen import LoadConfig, run_load
    from hf_ext.serving.training import run_policy

    prof_path = out_dir / "profile.json"
    profile.save(prof_path)
    cfg = sim["eval_cfg"]
    port = free_port()
    cmd = [sys.executable, "-m", "hf_ext.cli", "serve", "--port", str(port), "--profile", str(prof_path), "--router",
           str(out_dir / "router"), "--deadline", f"{cfg.deadline_s}", "--max-batch", str(cfg.max_batch),
           "--queue-bound", str(cfg.queue_bound), "--default-task", profile.tasks[0]]
    for spec in profile.meta["levels"]:
        cmd += ["--level", spec]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        log("live server up")
        sampler = RssSampler(proc.pid)
        sampler.start()
        sustain = max(sim["ratios"]["sustainable_rate"]["router"], sim["rates"][0])
        rows = []
        prompts = ["The Python standard library", "def main():", "A module groups functions and classes"]
        cap = 150 if args.smoke else 600  # requests per live run: bounded in count as well as time
        for label, rate in (("low", 0.5 * sustain), ("high", 2.0 * sustain)):
            duration = min(args.live_s or (8.0 if args.smoke else 40.0), cap / rate)
            lc = LoadConfig(url=url, rate=rate, duration_s=duration, max_requests=cap,
                            max_tokens=profile.max_new_tokens, prompts=prompts, tasks=list(profile.tasks),
                            deadline_s=cfg.deadline_s, timeout_s=4 * cfg.deadline_s + 30, seed=1)
            m = run_load(lc)
            log(f"live {label} rate {rate:.2f}/s: {m['status_counts']}")
            from hf_ext.serving.simulator import SimulatorConfig

            pred = run_policy(profile, SimulatorConfig.from_dict({**cfg.to_dict(), "duration_s": duration}),
                              sim["router"], seed=1, rate=rate)
            err = lambda a, b: 100.0 * abs(a - b) / b if b else float("nan")  # noqa: E731
            rows.append([label, f"{rate:.2f}", m["requests"], json.dumps(m["status_counts"]),
                         json.dumps(m["level_counts"]),
                         f"{m['p50_latency_s'] or 0:.2f} / {m['p99_latency_s'] or 0:.2f}",
                         f"{m['deadline_attainment']:.3f} (sim {pred['availability']:.3f}, "
                         f"{err(m['deadline_attainment'], pred['availability']):.0f} %)",
                         f"{m['quality_mean_over_all']:.3f}"])
        over_rate = 10 * sustain
        over_cap = 600 if args.smoke else 2000
        over_s = min(10.0 if args.smoke else 20.0, over_cap / over_rate)
        o = run_load(LoadConfig(url=url, rate=over_rate, duration_s=over_s, max_requests=over_cap,
                                max_tokens=profile.max_new_tokens, prompts=prompts, tasks=list(profile.tasks),
                                deadline_s=cfg.deadline_s, timeout_s=4 * cfg.deadline_s + 30, seed=2))
        log(f"overload: {o['status_counts']}")
        healthy = httpx.get(f"{url}/health", timeout=5).status_code == 200
        sampler.stop.set()
        rss = sampler.samples or [float("nan")]
        answered = sum(v for k, v in o["status_counts"].items() if k in ("200", "429", "503"))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return f"""### Live: the real server on 127.0.0.1 (router from above; each run bounded to {cap} requests)

{table(["load", "rate/s", "requests", "statuses", "levels served", "p50 / p99 s",
        "deadline attainment (simulator, error)", "quality over all"], rows)}

### Overload: {over_rate:.1f} req/s (10x the router's simulated sustainable rate) for {over_s:.0f} s

- requests sent {o['requests']}, answered {answered} ({json.dumps(o['status_counts'])}); refusals without
  Retry-After: {o['refused_without_retry_after']}; server healthy afterwards: {healthy}.
- server RSS: {rss[0]:.0f} MiB at the start of the live part, peak {max(rss):.0f} MiB, {rss[-1]:.0f} MiB at the end.
"""


def main() -> int:
    args = parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out_dir = ROOT / "benchmarks" / ("out" if args.smoke else "results") / ("serving_smoke" if args.smoke else "")
    out_dir = out_dir if args.smoke else ROOT / "benchmarks" / "results" / "serving_artifacts"
    out_dir.mkdir(parents=True, exist_ok=True)
    from hf_ext.serving.levels import DEFAULT_LEVELS

    levels = args.levels or (["tiny:llama@layers=1@vocab=64", "tiny:llama@vocab=160", "tiny:llama"] if args.smoke
                             else list(DEFAULT_LEVELS))
    start = time.perf_counter()
    profile = measure(levels, args.smoke)
    body, sim = simulate(profile, args, out_dir)
    if not args.skip_live:
        body += "\n" + live(profile, sim, args, out_dir)
    body += f"\nTotal {time.perf_counter() - start:.0f} s.\n"
    if not args.smoke:
        (out_dir / "serving_availability.png").replace(ROOT / "benchmarks" / "results" / "serving_availability.png")
        print(write_section("serving", "Learned best-effort serving (router vs static serving)", body,
                            packages=("fastapi", "uvicorn", "httpx", "gymnasium", "prometheus-client")))
    else:
        (out_dir / "serving.md").write_text("# smoke run: numbers meaningless\n\n" + body)
        print(body)
        print(f"wrote {out_dir / 'serving.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
