"""Configuration of the tiered tensor cache (10Cache, Afroz et al., SoCC 2025)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

EVICTION_POLICIES = ("belady", "lru", "fifo")
CHECKSUMS = ("crc32", "none")

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(value: int | float | str | None, name: str = "value") -> int | None:
    """``"8GiB"`` / ``"512MB"`` / ``1e9`` -> bytes; None stays None. Raises ValueError naming ``name``."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"{name} must be >= 0 bytes, got {value!r}.")
        return int(value)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-zA-Z]*)\s*", str(value))
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"{name} must be a byte count like '8GiB', '512MB' or 1000000, got {value!r}.")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


@dataclass
class TieredCacheConfig:
    """Settings of the tiered tensor cache: device / pinned host / NVMe tiers for parameters, gradients and Adam
    states during training.

    Choices that are ours (the paper leaves them open or we go beyond it) are marked "our choice".

    Args:
        device_budget: bytes of the device tier (on a CPU-only machine: a budgeted region of RAM). None = what is
            free on the device (CUDA) or 25 % of the training state (CPU; our choice).
        host_budget: bytes of the pinned host tier that holds tensors evicted from the device. None = everything
            that does not go to NVMe stays in host memory (no NVMe traffic) when ``nvme_path`` is None, else 0.
        nvme_path: folder on a local disk for the NVMe tier; None disables it.
        eviction: "belady" (MIN over the profiled future order; our addition), "lru" or "fifo" (the paper's rule).
        prefetch: bring tensors up ahead of the module that needs them, as far ahead as the profile says.
        prefetch_distance: ops to look ahead; None = as far ahead as the device budget allows (our choice): reads
            are issued in the profiled order of use while Belady's MIN finds a resident tensor needed later than
            the one brought in.
        device_pool_divisor: the paper's GPU rule ``slots = min(round(share * free / 2.5 / size), count)``; the
            2.5 keeps room for activations on a GPU. On a CPU the device budget is the pool, so 1.0 fits there.
        host_pool_divisor: the paper's CPU rule divisor (2).
        host_extra_slots: the paper's "+12" host slots per size class.
        min_device_slots: floor of device slots per size class (an Adam update needs parameter, gradient, m and v
            of one tensor together: 4; one more lets a prefetch overlap; our choice).
        io_threads: threads of the NVMe thread pool.
        direct_io: open NVMe files with O_DIRECT where the filesystem allows it (else buffered + fadvise DONTNEED).
        checksum: "crc32" of each NVMe payload, checked on every read ("none" keeps only the run-id check).
        update_in_backward: run each parameter's optimizer update as soon as its gradient is complete in the last
            backward before the step (our choice, beyond the paper), so gradients never leave the device tier and
            the parameter, still resident from its backward, is updated before it is evicted. Bit-for-bit the same
            update; off by itself under gradient clipping (it needs every gradient first) and data parallelism.
        profile_steps: optimizer steps recorded before planning (the paper: one warm-up iteration).
        timeline_path: write a PNG timeline of the first planned step here (None: no plot).
    """

    device_budget: int | str | None = field(default=None, metadata={"help": "Device tier bytes ('8GiB')."})
    host_budget: int | str | None = field(default=None, metadata={"help": "Pinned host tier bytes ('32GiB')."})
    nvme_path: str | None = field(default=None, metadata={"help": "Folder for the NVMe tier; None disables it."})
    eviction: str = field(default="belady", metadata={"help": f"One of {EVICTION_POLICIES}."})
    prefetch: bool = field(default=True, metadata={"help": "Profile-driven prefetch."})
    prefetch_distance: int | None = field(default=None,
                                          metadata={"help": "Ops ahead; None = as far as the budget allows."})
    device_pool_divisor: float = field(default=2.5, metadata={"help": "Paper's GPU slot rule divisor (2.5)."})
    host_pool_divisor: float = field(default=2.0, metadata={"help": "Paper's CPU slot rule divisor (2)."})
    host_extra_slots: int = field(default=12, metadata={"help": "Paper's +12 host slots per size class."})
    min_device_slots: int = field(default=5, metadata={"help": "Device slots per size class at least (ours)."})
    io_threads: int = field(default=4, metadata={"help": "Threads of the NVMe I/O pool."})
    direct_io: bool = field(default=True, metadata={"help": "O_DIRECT where the filesystem allows it."})
    checksum: str = field(default="crc32", metadata={"help": f"NVMe payload checksum, one of {CHECKSUMS}."})
    update_in_backward: bool = field(default=True, metadata={"help": "Optimizer update as each gradient completes."})
    profile_steps: int = field(default=1, metadata={"help": "Optimizer steps profiled before planning."})
    timeline_path: str | None = field(default=None, metadata={"help": "PNG timeline of one planned step."})

    def __post_init__(self) -> None:
        self.device_budget = parse_bytes(self.device_budget, "device_budget")
        self.host_budget = parse_bytes(self.host_budget, "host_budget")
        if self.eviction not in EVICTION_POLICIES:
            raise ValueError(f"eviction must be one of {EVICTION_POLICIES}, got {self.eviction!r}.")
        if self.checksum not in CHECKSUMS:
            raise ValueError(f"checksum must be one of {CHECKSUMS}, got {self.checksum!r}.")
        if self.prefetch_distance is not None and self.prefetch_distance < 1:
            raise ValueError(f"prefetch_distance must be >= 1 or None, got {self.prefetch_distance!r}.")
        for name in ("device_pool_divisor", "host_pool_divisor"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}.")
        for name, low in (("host_extra_slots", 0), ("min_device_slots", 1), ("io_threads", 1), ("profile_steps", 1)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {v!r}.")
        if self.nvme_path is not None and not str(self.nvme_path).strip():
            raise ValueError(f"nvme_path must be a folder path or None, got {self.nvme_path!r}.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TieredCacheConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"Unknown TieredCacheConfig keys {unknown}; known: {sorted(known)}.")
        return cls(**d)
