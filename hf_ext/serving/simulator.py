"""The serving simulator: a ``gymnasium.Env`` driven by a measured :class:`ServingProfile`.

One step is one request's routing decision. Each level is one worker serving FIFO batches of up to ``max_batch``
queued requests (service time from the profile, lognormal noise of the measured coefficient of variation); a queue
longer than ``queue_bound`` refuses the request (what a 429 is in the server). A request's reward is known only when
it completes, so ``step`` returns the rewards of the requests that completed during it and ``info["decision_rewards"]``
maps each of them to the step that routed it (the DQN trainer credits them there). The episode ends after the trace's
last request; everything still queued is then played out.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np

from ..common.config import ConfigMixin
from .arrivals import PATTERNS, Trace, make_trace
from .policies import EwmaRate, ObsSpec, RouterState, encode_state, soft_reward
from .profile import ServingProfile

REWARDS = ("hard", "soft")


@dataclass
class SimulatorConfig(ConfigMixin):
    """Workload and serving settings of :class:`ServingSimulator` (defaults are our choices).

    Args:
        pattern: Arrival pattern: "poisson", "gamma" or "diurnal".
        rate: Mean request rate (requests/s); a pair ``(low, high)`` draws one per episode, log-uniformly.
        burstiness: Gamma shape (1 = Poisson, < 1 burstier).
        duration_s: Simulated seconds per episode.
        max_requests: Hard bound on requests per episode.
        task_mix: Probability of each task (None: uniform).
        deadline_s: Relative deadline per task (one value: every task).
        max_batch: Largest batch a level serves.
        queue_bound: Longest queue a level accepts.
        reward: "hard" (quality if the deadline is met, else 0) or "soft" (quality decaying with lateness).
        soft_tau: Soft reward's decay time constant, in deadlines.
        drop_expired: A queued request whose deadline has passed is dropped instead of served.
        rate_halflife: Half-life of the EWMA arrival rate, in requests.
        noise: Use the profile's measured service-time variation (False: deterministic service times).
        minute_s: Simulated seconds per minute of the diurnal curve.
    """

    pattern: str = field(default="poisson", metadata={"help": "poisson, gamma or diurnal"})
    rate: float | tuple[float, float] = field(default=1.0, metadata={"help": "requests/s or (low, high)"})
    burstiness: float = field(default=1.0, metadata={"help": "gamma shape"})
    duration_s: float = field(default=60.0, metadata={"help": "simulated seconds per episode"})
    max_requests: int = field(default=2000, metadata={"help": "bound on requests per episode"})
    task_mix: list[float] | None = field(default=None, metadata={"help": "task probabilities"})
    deadline_s: float | list[float] = field(default=2.0, metadata={"help": "deadline per task, seconds"})
    max_batch: int = field(default=8, metadata={"help": "largest batch"})
    queue_bound: int = field(default=64, metadata={"help": "longest queue"})
    reward: str = field(default="hard", metadata={"help": "hard or soft"})
    soft_tau: float = field(default=0.5, metadata={"help": "soft decay, in deadlines"})
    drop_expired: bool = field(default=True, metadata={"help": "drop queued requests past their deadline"})
    rate_halflife: float = field(default=8.0, metadata={"help": "EWMA half-life, requests"})
    noise: bool = field(default=True, metadata={"help": "service-time noise from the profile"})
    minute_s: float = field(default=6.0, metadata={"help": "seconds per diurnal minute"})

    def __post_init__(self) -> None:
        if self.pattern not in PATTERNS:
            raise ValueError(f"pattern must be one of {PATTERNS}, got {self.pattern!r}.")
        if self.reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS}, got {self.reward!r}.")
        lo, hi = self.rate_range
        if not 0 < lo <= hi:
            raise ValueError(f"rate must be > 0 (and low <= high), got {self.rate}.")
        for name in ("burstiness", "duration_s", "soft_tau", "rate_halflife", "minute_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}.")
        for name in ("max_requests", "max_batch", "queue_bound"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        d = self.deadline_s if isinstance(self.deadline_s, (list, tuple)) else [self.deadline_s]
        if min(d) <= 0:
            raise ValueError(f"deadline_s must be > 0, got {self.deadline_s}.")
        if self.task_mix is not None and (min(self.task_mix) < 0 or sum(self.task_mix) <= 0):
            raise ValueError(f"task_mix must be non-negative with a positive sum, got {self.task_mix}.")

    @property
    def rate_range(self) -> tuple[float, float]:
        r = self.rate
        return (float(r[0]), float(r[1])) if isinstance(r, (list, tuple)) else (float(r), float(r))


class ServingSimulator(gym.Env):
    """Discrete-event simulation of a best-effort server; action = the level that serves the current request."""

    metadata = {"render_modes": []}

    def __init__(self, profile: ServingProfile, config: SimulatorConfig | None = None):
        super().__init__()
        self.profile, self.config = profile, config or SimulatorConfig()
        n_tasks, n_levels = len(profile.tasks), len(profile.levels)
        cfg = self.config
        self.spec_obs = ObsSpec(n_tasks=n_tasks, n_levels=n_levels, queue_bound=cfg.queue_bound,
                                max_batch=cfg.max_batch,
                                rate_scale=profile.capacity(profile.fastest_level(), cfg.max_batch))
        self.observation_space = gym.spaces.Box(0.0, self.spec_obs.high(), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(n_levels)
        d = cfg.deadline_s if isinstance(cfg.deadline_s, (list, tuple)) else [cfg.deadline_s] * n_tasks
        if len(d) != n_tasks:
            raise ValueError(f"deadline_s has {len(d)} values for {n_tasks} tasks.")
        self.deadlines = [float(x) for x in d]
        mix = cfg.task_mix or [1.0] * n_tasks
        if len(mix) != n_tasks:
            raise ValueError(f"task_mix has {len(mix)} values for {n_tasks} tasks.")
        self.task_mix = list(mix)
        self.trace: Trace | None = None

    # ------------------------------------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = options or {}
        lo, hi = self.config.rate_range
        rate = float(options.get("rate", np.exp(self.np_random.uniform(np.log(lo), np.log(hi)))))
        trace = options.get("trace") or make_trace(
            self.config.pattern, rate, self.config.duration_s, self.np_random, max_requests=self.config.max_requests,
            task_mix=self.task_mix, deadlines=self.deadlines, burstiness=self.config.burstiness,
            minute_s=self.config.minute_s)
        if len(trace) == 0:  # a bounded trace may be empty at a tiny rate: keep one request
            trace = Trace(np.zeros(1), np.zeros(1, dtype=np.int64), np.asarray(self.deadlines[:1]))
        self.trace, self.rate = trace, rate
        n_levels = len(self.profile.levels)
        self.queues: list[deque] = [deque() for _ in range(n_levels)]
        self.running: list[list[int]] = [[] for _ in range(n_levels)]
        self.busy_until = [0.0] * n_levels
        self.ewma = EwmaRate(self.config.rate_halflife)
        self.i = 0
        self.level_of = np.full(len(trace), -1, dtype=np.int64)
        self.latency = np.full(len(trace), np.nan)
        self.reward_of = np.zeros(len(trace))
        self.met = np.zeros(len(trace), dtype=bool)
        self.outcome = np.zeros(len(trace), dtype=np.int8)  # 0 pending, 1 served, 2 refused, 3 dropped
        self._completed: dict[int, float] = {}
        self.ewma.update(float(trace.times[0]))
        return self._obs(), {"rate": rate, "requests": len(trace)}

    def step(self, action):
        if self.trace is None:
            raise RuntimeError("Call reset() before step().")
        action = int(action)
        if not 0 <= action < len(self.profile.levels):
            raise ValueError(f"action must be a level index in [0, {len(self.profile.levels)}), got {action}.")
        i, now = self.i, float(self.trace.times[self.i])
        self.level_of[i] = action
        if len(self.queues[action]) >= self.config.queue_bound:
            self._finish(i, 2, 0.0, None)
        else:
            self.queues[action].append(i)
            self._advance(now)
        self.i += 1
        terminated = self.i >= len(self.trace)
        if terminated:
            self._advance(float("inf"))
        else:
            t = float(self.trace.times[self.i])
            self._advance(t)
            self.ewma.update(t)
        done, self._completed = self._completed, {}
        obs = self._obs() if not terminated else np.zeros(self.spec_obs.dim, dtype=np.float32)
        info = {"decision_rewards": done}
        if terminated:
            info["summary"] = self.summary()
        return obs, float(sum(done.values())), terminated, False, info

    # ------------------------------------------------------------------------------------------------ internals
    def state(self) -> RouterState:
        """The raw state the current request's decision sees (what baselines read)."""
        return RouterState(task=int(self.trace.tasks[self.i]), queue_lengths=[len(q) for q in self.queues],
                           running=[len(r) for r in self.running], rate=self.ewma.rate)

    def _obs(self) -> np.ndarray:
        return encode_state(self.state(), self.spec_obs)

    def _service(self, level: int, batch: int) -> float:
        lv = self.profile.levels[level]
        t = lv.service_time(batch)
        if self.config.noise and lv.service_cv > 0:
            s = np.sqrt(np.log1p(lv.service_cv**2))
            t *= float(self.np_random.lognormal(-0.5 * s * s, s))
        return t

    def _finish(self, i: int, outcome: int, reward: float, latency: float | None) -> None:
        self.outcome[i], self.reward_of[i] = outcome, reward
        if latency is not None:
            self.latency[i] = latency
            self.met[i] = latency <= self.trace.deadlines[i] + 1e-12
        self._completed[i] = reward

    def _advance(self, t: float) -> None:
        """Run every level's worker up to time ``t``."""
        times, deadlines, tasks = self.trace.times, self.trace.deadlines, self.trace.tasks
        for lv in range(len(self.queues)):
            q, run = self.queues[lv], self.running[lv]
            while True:
                if run and self.busy_until[lv] <= t:
                    end = self.busy_until[lv]
                    for j in run:
                        lat = end - times[j]
                        qual = self.profile.quality(lv, int(tasks[j]))
                        if self.config.reward == "hard":
                            r = qual if lat <= deadlines[j] + 1e-12 else 0.0
                        else:
                            r = soft_reward(qual, lat, deadlines[j], self.config.soft_tau)
                        self._finish(j, 1, r, lat)
                    run.clear()
                if run or not q:
                    break
                start = max(self.busy_until[lv], times[q[0]])
                if start > t:
                    break
                while q and self.config.drop_expired and start - times[q[0]] > deadlines[q[0]]:
                    self._finish(q.popleft(), 3, 0.0, None)
                while q and len(run) < self.config.max_batch and times[q[0]] <= start:
                    run.append(q.popleft())
                if run:
                    self.busy_until[lv] = start + self._service(lv, len(run))

    def summary(self) -> dict:
        """Per-episode figures over every request of the trace."""
        n = len(self.trace)
        peak = np.asarray([self.profile.peak_quality(int(k)) for k in self.trace.tasks])
        served = self.outcome == 1
        lat = self.latency[served]
        return {
            "requests": n,
            "rate": self.rate,
            "availability": float(self.met.mean()),
            "normalized_quality": float(self.reward_of.sum() / peak.sum()),
            "refused": int((self.outcome == 2).sum()),
            "dropped": int((self.outcome == 3).sum()),
            "served": int(served.sum()),
            "p50_latency_s": float(np.median(lat)) if len(lat) else float("nan"),
            "p99_latency_s": float(np.quantile(lat, 0.99)) if len(lat) else float("nan"),
            "level_share": [float((self.level_of == lv).mean()) for lv in range(len(self.profile.levels))],
        }
