"""What a routing decision sees, and the baselines the learned router is measured against.

The same :class:`RouterState` is built by the simulator and by the server, encoded by :func:`encode_state` into the
router's observation: the task id (one-hot), queue length and running batch size per level, and the EWMA arrival
rate (Jha et al.'s state, plus queue lengths). Baselines: static best quality, static fastest, and a queue-length
threshold heuristic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..common.config import ConfigMixin

RATE_CLIP = 4.0  # observation bound of the normalised arrival rate (rates above 4x capacity all look alike)


@dataclass
class RouterState:
    """The raw state at one request's arrival: ``task`` index, per-level ``queue_lengths`` and ``running`` batch
    sizes, ``rate`` (EWMA requests/s)."""

    task: int
    queue_lengths: list[int]
    running: list[int]
    rate: float


@dataclass
class ObsSpec(ConfigMixin):
    """How a :class:`RouterState` is normalised into the router's input vector.

    Args:
        n_tasks: Number of tasks (one-hot width).
        n_levels: Number of levels.
        queue_bound: Queue length that maps to 1.0.
        max_batch: Batch size that maps to 1.0.
        rate_scale: Arrival rate that maps to 1.0 (our choice: the fastest level's capacity at full batches).
    """

    n_tasks: int = field(default=1, metadata={"help": "tasks"})
    n_levels: int = field(default=1, metadata={"help": "levels"})
    queue_bound: int = field(default=64, metadata={"help": "queue length mapped to 1.0"})
    max_batch: int = field(default=8, metadata={"help": "batch size mapped to 1.0"})
    rate_scale: float = field(default=1.0, metadata={"help": "requests/s mapped to 1.0"})

    def __post_init__(self) -> None:
        for name in ("n_tasks", "n_levels", "queue_bound", "max_batch"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.rate_scale <= 0:
            raise ValueError(f"rate_scale must be > 0, got {self.rate_scale}.")

    @property
    def dim(self) -> int:
        return self.n_tasks + 2 * self.n_levels + 1

    def high(self) -> np.ndarray:
        h = np.ones(self.dim, dtype=np.float32)
        h[-1] = RATE_CLIP
        return h


def encode_state(state: RouterState, spec: ObsSpec) -> np.ndarray:
    """The float32 observation vector of ``state`` (bounded in ``[0, spec.high()]``)."""
    obs = np.zeros(spec.dim, dtype=np.float32)
    obs[state.task] = 1.0
    n = spec.n_tasks
    obs[n:n + spec.n_levels] = np.minimum(np.asarray(state.queue_lengths, dtype=np.float32) / spec.queue_bound, 1.0)
    obs[n + spec.n_levels:n + 2 * spec.n_levels] = np.minimum(
        np.asarray(state.running, dtype=np.float32) / spec.max_batch, 1.0)
    obs[-1] = min(state.rate / spec.rate_scale, RATE_CLIP)
    return obs


class EwmaRate:
    """Arrival rate as an exponentially weighted moving average of inter-arrival gaps.

    ``halflife`` is in requests (our choice: 8). The first arrival gives rate 0; the router is stateless beyond
    this one number, which is why replicas need no coordination.
    """

    def __init__(self, halflife: float = 8.0):
        if halflife <= 0:
            raise ValueError(f"halflife must be > 0, got {halflife}.")
        self.alpha = 1.0 - 0.5 ** (1.0 / halflife)
        self.mean_gap: float | None = None
        self.last: float | None = None

    def update(self, now: float) -> float:
        if self.last is not None:
            gap = max(now - self.last, 1e-6)
            self.mean_gap = gap if self.mean_gap is None else (1 - self.alpha) * self.mean_gap + self.alpha * gap
        self.last = now
        return self.rate

    @property
    def rate(self) -> float:
        return 0.0 if self.mean_gap is None else 1.0 / self.mean_gap


def estimate_completion(now: float, busy_until: float, queued: int, max_batch: int, service_time) -> float:
    """When a request joining a level's queue now would finish: the running batch ends at ``busy_until``, then the
    ``queued`` requests ahead of it and itself go in full batches of ``max_batch`` (``service_time(bs)`` seconds)."""
    start = max(now, busy_until)
    ahead_batches, position = divmod(queued, max_batch)
    own = min(position + 1, max_batch)
    return start + ahead_batches * service_time(max_batch) + service_time(own)


# ------------------------------------------------------------------------------------------------------ baselines
class StaticPolicy:
    """Always the same level (static best quality or static fastest)."""

    def __init__(self, level: int, name: str = "static"):
        self.level, self.name = int(level), name

    def choose(self, state: RouterState) -> int:
        return self.level


class ThresholdPolicy:
    """Queue-length threshold heuristic: the best-quality level for the task whose queue is shorter than
    ``threshold``; when every queue is that long, the level with the shortest queue relative to its capacity.

    Args:
        quality: ``quality[level][task]``.
        capacity: Requests/s per level at full batches (to break the all-full tie).
        threshold: Queue length that counts as congested (our default: one full batch).
    """

    name = "threshold"

    def __init__(self, quality: list[list[float]], capacity: list[float], threshold: int):
        self.quality, self.capacity, self.threshold = quality, capacity, int(threshold)

    def choose(self, state: RouterState) -> int:
        order = sorted(range(len(self.quality)), key=lambda lv: -self.quality[lv][state.task])
        for lv in order:
            if state.queue_lengths[lv] < self.threshold:
                return lv
        return min(order, key=lambda lv: state.queue_lengths[lv] / self.capacity[lv])


def baselines(profile, max_batch: int, threshold: int | None = None) -> dict:
    """The three baselines for a :class:`~hf_ext.serving.profile.ServingProfile`."""
    quality = [[profile.quality(lv, t) for t in range(len(profile.tasks))] for lv in range(len(profile.levels))]
    capacity = [profile.capacity(lv, max_batch) for lv in range(len(profile.levels))]
    thr = max_batch if threshold is None else threshold
    return {
        "static_best": StaticPolicy(profile.best_level(), "static_best"),
        "static_fastest": StaticPolicy(profile.fastest_level(), "static_fastest"),
        "threshold": ThresholdPolicy(quality, capacity, thr),
    }


def soft_reward(quality: float, latency: float, deadline: float, tau: float) -> float:
    """Quality decaying exponentially with lateness, time constant ``tau`` deadlines (our choice of shape)."""
    late = max(0.0, latency - deadline)
    return quality * math.exp(-late / (tau * deadline)) if late > 0 else quality
