"""Train the router in the simulator and evaluate any policy there (availability, quality, the paper's ratios)."""

from __future__ import annotations

import numpy as np
from transformers.utils import logging

from .dqn import DQNConfig, train_dqn
from .profile import ServingProfile
from .router import Router
from .simulator import ServingSimulator, SimulatorConfig

logger = logging.get_logger(__name__)


def train_router(profile: ServingProfile, sim_config: SimulatorConfig | None = None,
                 dqn_config: DQNConfig | None = None, progress: bool = True) -> tuple[Router, dict]:
    """Double-DQN router for ``profile``; episodes draw their rate from ``sim_config.rate`` (a range trains one
    router for light and heavy load alike)."""
    env = ServingSimulator(profile, sim_config)
    q, log = train_dqn(env, dqn_config, progress=progress)
    meta = {"sim_config": env.config.to_dict(), "dqn_config": (dqn_config or DQNConfig()).to_dict(),
            "episodes": log["episodes"]}
    return Router(q, env.spec_obs, profile.names, profile.tasks, meta), log


def run_policy(profile: ServingProfile, sim_config: SimulatorConfig, policy, seed: int,
               rate: float | None = None) -> dict:
    """One episode with ``policy.choose(state)``; returns the simulator's summary."""
    env = ServingSimulator(profile, sim_config)
    _, _ = env.reset(seed=seed, options=None if rate is None else {"rate": rate})
    while True:
        _, _, terminated, truncated, info = env.step(policy.choose(env.state()))
        if terminated or truncated:
            return info["summary"]


def sweep(profile: ServingProfile, sim_config: SimulatorConfig, policies: dict, rates: list[float],
          seeds: list[int]) -> dict:
    """``{policy: {rate: [summary per seed]}}``; every policy sees the same traces (same seed and rate)."""
    out = {name: {r: [] for r in rates} for name in policies}
    for r in rates:
        for s in seeds:
            for name, pol in policies.items():
                out[name][r].append(run_policy(profile, sim_config, pol, s, rate=r))
    return out


def sustainable_rate(per_rate: dict, target: float = 0.99) -> float:
    """Largest rate whose median availability over seeds is at least ``target`` (0 when none)."""
    ok = [r for r, runs in per_rate.items() if np.median([x["availability"] for x in runs]) >= target]
    return max(ok) if ok else 0.0


def fraction_above(per_rate: dict, frac_of_peak: float) -> float:
    """Share of (rate, seed) runs whose normalized quality (reward / peak reward) is at least ``frac_of_peak``."""
    runs = [x for rs in per_rate.values() for x in rs]
    return float(np.mean([x["normalized_quality"] >= frac_of_peak for x in runs]))


def paper_ratios(results: dict, ours: str = "router", static: str = "static_best",
                 availability_target: float = 0.99) -> dict:
    """The paper's three figures, computed our documented way over one rate sweep:

    * ``rate_ratio``: the largest rate at which ``ours`` keeps median availability >= ``availability_target``,
      divided by the same for ``static`` (paper: "> 10x").
    * ``above_96_ratio`` / ``above_98_ratio``: how much more often ``ours`` than ``static`` reaches 96 % / 98 % of
      peak quality (reward summed over the run / the reward of serving every request at its best level within its
      deadline), over every (rate, seed) run (paper: 4.1x and 2.3x). ``inf`` when static never does.
    """
    def ratio(a: float, b: float) -> float:
        return float("inf") if b == 0 and a > 0 else (a / b if b > 0 else float("nan"))

    r_ours, r_static = sustainable_rate(results[ours], availability_target), sustainable_rate(
        results[static], availability_target)
    out = {"sustainable_rate": {ours: r_ours, static: r_static}, "rate_ratio": ratio(r_ours, r_static)}
    for p in (0.96, 0.98):
        a, b = fraction_above(results[ours], p), fraction_above(results[static], p)
        out[f"above_{int(p * 100)}"] = {ours: a, static: b}
        out[f"above_{int(p * 100)}_ratio"] = ratio(a, b)
    return out
