"""Metrics of the tiered cache: per-tier hit rates, bytes per link, stall time, pool utilisation, allocations; a
summary object, the ``on_log`` keys and a PNG timeline of one step (compute vs transfers per link)."""

from __future__ import annotations

import os
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field

LINKS = ("host->device", "device->host", "nvme->device", "device->nvme")


@dataclass
class TieredCacheStats:
    """Counters since the last :meth:`reset` (the engine resets them when planning ends)."""

    device_hits: int = 0
    device_misses: int = 0
    late_prefetches: int = 0
    host_hits: int = 0
    nvme_reads: int = 0
    prefetches: int = 0
    evictions: int = 0
    stall_seconds: float = 0.0
    steps: int = 0
    bytes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LINKS, 0))
    busy_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(LINKS, 0.0))
    device_pool_utilization: float = 0.0
    host_pool_utilization: float = 0.0
    allocations: int = 0
    io_mode: str = ""

    @property
    def device_hit_rate(self) -> float:
        n = self.device_hits + self.device_misses
        return self.device_hits / n if n else 1.0

    @property
    def host_hit_rate(self) -> float:
        """Among device misses, the share served from pinned host memory (the rest came from NVMe)."""
        n = self.host_hits + self.nvme_reads
        return self.host_hits / n if n else 1.0

    def bandwidth(self, link: str) -> float:
        """Measured bytes / busy second of ``link`` (per worker; 0 when unused)."""
        t = self.busy_seconds[link]
        return self.bytes[link] / t if t > 0 else 0.0

    def to_logs(self, prefix: str = "tiered/") -> dict[str, float]:
        out = {"device_hit_rate": self.device_hit_rate, "host_hit_rate": self.host_hit_rate,
               "stall_seconds": self.stall_seconds, "device_pool_utilization": self.device_pool_utilization,
               "host_pool_utilization": self.host_pool_utilization, "allocations": float(self.allocations),
               "evictions": float(self.evictions), "prefetches": float(self.prefetches)}
        out.update({f"bytes_{k.replace('->', '_to_')}": float(v) for k, v in self.bytes.items()})
        return {prefix + k: v for k, v in out.items()}

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(device_hit_rate=self.device_hit_rate, host_hit_rate=self.host_hit_rate)
        return d


class Timeline:
    """Intervals (lane, start, end, label) of one step, drawn as a PNG."""

    def __init__(self) -> None:
        self.events: list[tuple[str, float, float, str]] = []
        self.active = False
        self._lock = threading.Lock()
        self.t0 = 0.0

    def start(self) -> None:
        self.events, self.active, self.t0 = [], True, time.perf_counter()

    def add(self, lane: str, start: float, end: float, label: str = "") -> None:
        if self.active:
            with self._lock:
                self.events.append((lane, max(start - self.t0, 0.0), end - self.t0, label))

    def save_png(self, path: str) -> str:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        lanes = ["compute", "stall", *LINKS]
        fig, ax = plt.subplots(figsize=(11, 3.2))
        colors = {"compute": "tab:blue", "stall": "tab:red"}
        for lane, s, e, _ in self.events:
            y = lanes.index(lane) if lane in lanes else len(lanes)
            ax.broken_barh([(s, max(e - s, 1e-5))], (y - 0.4, 0.8), color=colors.get(lane, "tab:green"))
        ax.set_yticks(range(len(lanes)), lanes)
        ax.invert_yaxis()
        ax.set_xlabel("seconds into the step")
        ax.set_title("Tiered cache: one training step (compute vs transfers per link)")
        fig.tight_layout()
        fd, tmp = tempfile.mkstemp(suffix=".png", dir=os.path.dirname(os.path.abspath(path)) or ".")
        os.close(fd)
        fig.savefig(tmp, dpi=110)
        plt.close(fig)
        os.replace(tmp, path)
        return path
