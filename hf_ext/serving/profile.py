"""A measured serving profile: per quality level, service time per batch size and quality per task.

The simulator, the router's training and the server's admission estimate all read this one object. It is measured
on the machine that serves (:func:`hf_ext.serving.profiler.measure_profile`, ``hf-ext serve profile``), never assumed;
a JSON file round-trips it.
"""

from __future__ import annotations

import bisect
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..common.utils import atomic_write_json

PROFILE_VERSION = 1


@dataclass
class LevelProfile:
    """One quality level as measured.

    Args:
        name: Level name (as the server names it).
        batch_sizes: Batch sizes that were timed, increasing.
        service_s: Median seconds to serve one batch of each size (same order as ``batch_sizes``).
        service_cv: Measured coefficient of variation of the service time (the simulator's noise).
        quality: Task name -> quality in [0, 1] at this level (higher is better).
        memory_mib: Memory this level adds (dense caches, weights), when measured.
    """

    name: str = field(default="level", metadata={"help": "level name"})
    batch_sizes: list[int] = field(default_factory=lambda: [1], metadata={"help": "timed batch sizes"})
    service_s: list[float] = field(default_factory=lambda: [1.0], metadata={"help": "median batch seconds"})
    service_cv: float = field(default=0.0, metadata={"help": "coefficient of variation of service time"})
    quality: dict[str, float] = field(default_factory=dict, metadata={"help": "task -> quality in [0, 1]"})
    memory_mib: float | None = field(default=None, metadata={"help": "memory of this level, MiB"})

    def __post_init__(self) -> None:
        if not self.batch_sizes or len(self.batch_sizes) != len(self.service_s):
            raise ValueError(f"batch_sizes and service_s must be non-empty and of equal length, got "
                             f"{self.batch_sizes} and {self.service_s}.")
        if list(self.batch_sizes) != sorted(set(self.batch_sizes)) or self.batch_sizes[0] < 1:
            raise ValueError(f"batch_sizes must be increasing positive ints, got {self.batch_sizes}.")
        if min(self.service_s) <= 0:
            raise ValueError(f"service_s must be positive, got {self.service_s}.")
        if self.service_cv < 0:
            raise ValueError(f"service_cv must be >= 0, got {self.service_cv}.")
        bad = {k: v for k, v in self.quality.items() if not 0.0 <= v <= 1.0}
        if bad:
            raise ValueError(f"quality values must be in [0, 1], got {bad}.")

    def service_time(self, batch_size: int) -> float:
        """Seconds for a batch of ``batch_size``: linear interpolation between timed sizes, linear extrapolation
        beyond the largest (from the last two points, never below the last time)."""
        b, t = self.batch_sizes, self.service_s
        if batch_size <= b[0]:
            return t[0]
        if batch_size >= b[-1]:
            if len(b) == 1:
                return t[0] * batch_size / b[0]
            slope = max(0.0, (t[-1] - t[-2]) / (b[-1] - b[-2]))
            return t[-1] + slope * (batch_size - b[-1])
        i = bisect.bisect_left(b, batch_size)
        w = (batch_size - b[i - 1]) / (b[i] - b[i - 1])
        return t[i - 1] + w * (t[i] - t[i - 1])


@dataclass
class ServingProfile:
    """Every level of one deployment plus the tasks they were scored on.

    Args:
        levels: One :class:`LevelProfile` per level, in the server's order.
        tasks: Task names; each level's ``quality`` has one entry per task.
        max_new_tokens: Tokens generated per request when the service times were measured.
        meta: Free-form provenance (machine, model, date, protocol).
    """

    levels: list[LevelProfile] = field(default_factory=list, metadata={"help": "the levels"})
    tasks: list[str] = field(default_factory=lambda: ["default"], metadata={"help": "task names"})
    max_new_tokens: int = field(default=16, metadata={"help": "tokens per request when timed"})
    meta: dict = field(default_factory=dict, metadata={"help": "provenance"})

    def __post_init__(self) -> None:
        self.levels = [lv if isinstance(lv, LevelProfile) else LevelProfile(**lv) for lv in self.levels]
        if not self.levels:
            raise ValueError("levels must hold at least one LevelProfile, got none.")
        if not self.tasks or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks must be non-empty and unique, got {self.tasks}.")
        for lv in self.levels:
            missing = set(self.tasks) - set(lv.quality)
            if missing:
                raise ValueError(f"level {lv.name!r} has no quality for tasks {sorted(missing)}.")
        names = [lv.name for lv in self.levels]
        if len(set(names)) != len(names):
            raise ValueError(f"level names must be unique, got {names}.")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}.")

    @property
    def names(self) -> list[str]:
        return [lv.name for lv in self.levels]

    def quality(self, level: int, task: int) -> float:
        return self.levels[level].quality[self.tasks[task]]

    def peak_quality(self, task: int) -> float:
        return max(self.quality(i, task) for i in range(len(self.levels)))

    def best_level(self) -> int:
        """Level of highest mean quality over tasks (the static-best baseline)."""
        means = [sum(lv.quality.values()) / len(lv.quality) for lv in self.levels]
        return max(range(len(means)), key=lambda i: (means[i], -self.levels[i].service_time(1)))

    def fastest_level(self) -> int:
        """Level of lowest single-request service time (the static-fastest baseline)."""
        return min(range(len(self.levels)), key=lambda i: self.levels[i].service_time(1))

    def capacity(self, level: int, max_batch: int) -> float:
        """Requests per second the level sustains when every batch is full."""
        return max_batch / self.levels[level].service_time(max_batch)

    def to_dict(self) -> dict:
        return {"version": PROFILE_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> ServingProfile:
        d = dict(d)
        version = d.pop("version", PROFILE_VERSION)
        if version != PROFILE_VERSION:
            raise ValueError(f"Unsupported profile version {version!r} (this hf-ext reads {PROFILE_VERSION}).")
        unknown = set(d) - {"levels", "tasks", "max_new_tokens", "meta"}
        if unknown:
            raise ValueError(f"Unknown profile keys {sorted(unknown)}.")
        levels = []
        for lv in d.get("levels", []):
            extra = set(lv) - set(LevelProfile.__dataclass_fields__)
            if extra:
                raise ValueError(f"Unknown level profile keys {sorted(extra)}.")
            levels.append(LevelProfile(**lv))
        return cls(**{**d, "levels": levels})

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> ServingProfile:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"No serving profile at {str(path)!r}; measure one with `hf-ext serve profile`.")
        return cls.from_dict(json.loads(path.read_text()))
