"""Planning math over a profiled trace, as pure functions: size classes and pool slots (the paper's rule),
placement across tiers, eviction (Belady's MIN, LRU, the paper's FIFO) and the prefetch schedule.

A trace is the list of :class:`Op` one optimizer step executes, in order (forward of each module, the backward uses
of saved parameters, gradients as they are produced, the optimizer's update of each tensor). It repeats every step,
so "the next use" of a tensor is cyclic: after the last op comes the first op of the next step.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

DEVICE, HOST, NVME = "device", "host", "nvme"


@dataclass(frozen=True)
class Op:
    """One step of the trace: the tensors (by key) it needs resident on the device, and its measured compute time."""

    name: str
    keys: tuple[str, ...]
    seconds: float = 0.0


def size_histogram(sizes: Mapping[str, int]) -> dict[int, int]:
    """Bytes -> number of tensors of that size (the paper's tensor-size histogram)."""
    return dict(sorted(Counter(sizes.values()).items()))


def device_slots(hist: Mapping[int, int], budget: int, divisor: float = 2.5, min_slots: int = 5) -> dict[int, int]:
    """Device slots per size class: the paper's ``min(round(share[s] * budget / divisor / s), count[s])`` with
    ``share[s] = s * count[s] / sum(s * count)``, raised to ``min(min_slots, count[s])`` so the largest working set
    (an Adam update needs 4 tensors of one class together) always fits.

    Raises:
        ValueError: the floor alone does not fit in ``budget``.
    """
    total = sum(s * c for s, c in hist.items())
    out = {}
    for s, c in hist.items():
        share = s * c / total if total else 0.0
        out[s] = max(min(round(share * budget / divisor / s), c), min(min_slots, c))
    need = min_device_bytes(hist, min_slots)
    if need > budget:
        raise ValueError(f"device_budget={budget} bytes is below the smallest working set, {need} bytes "
                         f"({min_slots} slots of each tensor size, largest {max(hist, default=0)} bytes).")
    while sum(s * n for s, n in out.items()) > budget:  # rounding can overshoot: shed from the largest share
        s = max((s for s in out if out[s] > min(min_slots, hist[s])), key=lambda s: s * out[s])
        out[s] -= 1
    return out


def min_device_bytes(hist: Mapping[int, int], min_slots: int = 5) -> int:
    """The smallest device budget :func:`device_slots` accepts."""
    return sum(s * min(min_slots, c) for s, c in hist.items())


def host_slots(hist: Mapping[int, int], dev: Mapping[int, int], budget: int, divisor: float = 2.0,
               extra: int = 12) -> dict[int, int]:
    """Pinned host slots per size class: the paper's ``min(round(share[s] * budget / divisor / s),
    count[s] - device[s] + extra)``, trimmed so the pool stays within ``budget``."""
    total = sum(s * c for s, c in hist.items())
    out = {s: max(0, min(round((s * c / total if total else 0) * budget / divisor / s), c - dev.get(s, 0) + extra))
           for s, c in hist.items()}
    while sum(s * n for s, n in out.items()) > budget:
        s = max((s for s in out if out[s] > 0), key=lambda s: s * out[s])
        out[s] -= 1
    return out


def place(order: Sequence[str], sizes: Mapping[str, int], dev: Mapping[int, int], host: Mapping[int, int],
          nvme: bool, host_unbounded: bool = False) -> dict[str, str]:
    """The paper's placement: tensors in first-use order fill device slots of their size class first, then pinned
    host slots, the rest go to NVMe (or raise when there is no NVMe tier and ``host_unbounded`` is False)."""
    left_dev, left_host = dict(dev), dict(host)
    out = {}
    for key in order:
        s = sizes[key]
        if left_dev.get(s, 0) > 0:
            left_dev[s] -= 1
            out[key] = DEVICE
        elif left_host.get(s, 0) > 0 or host_unbounded:
            left_host[s] = left_host.get(s, 0) - 1
            out[key] = HOST
        elif nvme:
            out[key] = NVME
        else:
            raise ValueError(f"Tensor {key!r} ({s} bytes) fits neither the device nor the host budget and there is "
                             "no NVMe tier: raise host_budget or set nvme_path.")
    return out


def homes_by_misses(sim: SimResult, keys: Sequence[str], sizes: Mapping[str, int], host: Mapping[int, int],
                    nvme: bool) -> dict[str, str]:
    """Where each tensor's copy lives off the device: the pinned host slots of a size class go to the tensors that
    miss the device most often in the simulated plan (ties: first-use order), the rest to NVMe. The paper fills
    host slots in first-use order; with a device cache that evicts by the future, the miss count is what makes a
    host slot worth having (our choice)."""
    order = sorted(range(len(keys)), key=lambda i: (-sim.misses_by_key.get(keys[i], 0), i))
    return place([keys[i] for i in order], sizes, {}, host, nvme)


def fuse_updates(trace: Sequence[Op]) -> list[Op]:
    """``trace`` as it runs when each parameter's optimizer update (op ``step:<key>``) follows right after its
    gradient is complete (the last ``grad:<key>`` op before it); updates without a gradient op stay in place."""
    steps = {op.name[5:]: op for op in trace if op.name.startswith("step:")}
    last_grad = {op.name[5:]: i for i, op in enumerate(trace) if op.name.startswith("grad:") and op.name[5:] in steps}
    out = []
    for i, op in enumerate(trace):
        if op.name.startswith("step:") and op.name[5:] in last_grad:
            continue
        out.append(op)
        if op.name.startswith("grad:") and last_grad.get(op.name[5:]) == i:
            out.append(steps[op.name[5:]])
    return out


def first_use_order(trace: Iterable[Op]) -> list[str]:
    seen: dict[str, None] = {}
    for op in trace:
        for k in op.keys:
            seen.setdefault(k, None)
    return list(seen)


class NextUse:
    """Cyclic next-use positions of every key in a trace (the future Belady's MIN needs)."""

    def __init__(self, trace: Sequence[Op]):
        self.length = len(trace)
        self.positions: dict[str, list[int]] = {}
        for i, op in enumerate(trace):
            for k in op.keys:
                pos = self.positions.setdefault(k, [])
                if not pos or pos[-1] != i:
                    pos.append(i)

    def after(self, key: str, now: int) -> float:
        """Index of the first use of ``key`` strictly after op ``now`` (wrapping into the next step); inf if never."""
        pos = self.positions.get(key)
        if not pos:
            return float("inf")
        j = bisect.bisect_right(pos, now)
        return pos[j] if j < len(pos) else pos[0] + self.length


def choose_victim(candidates: Iterable[str], policy: str, now: int, next_use: NextUse | None,
                  last_use: Mapping[str, float], inserted: Mapping[str, float]) -> str | None:
    """The resident tensor to evict: Belady's MIN (farthest next use), LRU (oldest use) or FIFO (oldest arrival)."""
    cands = list(candidates)
    if not cands:
        return None
    if policy == "belady" and next_use is not None:
        return max(cands, key=lambda k: (next_use.after(k, now), -last_use.get(k, 0.0)))
    if policy == "fifo":
        return min(cands, key=lambda k: inserted.get(k, 0.0))
    return min(cands, key=lambda k: last_use.get(k, 0.0))


@dataclass
class SimResult:
    """Outcome of replaying a trace through a per-size-class device cache."""

    hits: int = 0
    misses: int = 0
    bytes_fetched: int = 0
    evictions: list[tuple[int, str]] = field(default_factory=list)
    peak_bytes: int = 0
    misses_by_key: Counter = field(default_factory=Counter)
    miss_bytes_by_op: list[int] = field(default_factory=list)  # in the last replayed step
    fetches: list[tuple[int, str, str | None]] = field(default_factory=list)  # last step: (op, key, victim)

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 1.0


def simulate(trace: Sequence[Op], sizes: Mapping[str, int], slots: Mapping[int, int], policy: str = "belady",
             steps: int = 2, warm: Iterable[str] = ()) -> SimResult:
    """Replay ``trace`` ``steps`` times through a cache with ``slots[size]`` slots per size class and count hits,
    misses, bytes fetched and the evictions; the resident bytes never exceed ``sum(size * slots)`` (checked)."""
    nu = NextUse(trace)
    resident: dict[int, set[str]] = {s: set() for s in slots}
    last, arrived = {}, {}
    res = SimResult()
    cap = sum(s * n for s, n in slots.items())
    clock = 0
    for k in warm:
        if len(resident[sizes[k]]) < slots[sizes[k]]:
            resident[sizes[k]].add(k)
    for step in range(steps):
        if step == steps - 1:
            res.miss_bytes_by_op = [0] * len(trace)
        for i, op in enumerate(trace):
            pinned = set(op.keys)
            for k in op.keys:
                clock += 1
                s = sizes[k]
                if k in resident[s]:
                    res.hits += 1
                else:
                    res.misses += 1
                    res.misses_by_key[k] += 1
                    res.bytes_fetched += s
                    if step == steps - 1:
                        res.miss_bytes_by_op[i] += s
                    victim = None
                    if len(resident[s]) >= slots[s]:
                        victim = choose_victim(resident[s] - pinned, policy, i, nu, last, arrived)
                        if victim is None:
                            raise ValueError(f"op {op.name!r} needs more than {slots[s]} slots of {s} bytes")
                        resident[s].discard(victim)
                        res.evictions.append((i, victim))
                    if step == steps - 1:
                        res.fetches.append((i, k, victim))
                    resident[s].add(k)
                    arrived[k] = clock
                last[k] = clock
            used = sum(s * len(r) for s, r in resident.items())
            res.peak_bytes = max(res.peak_bytes, used)
            if used > cap:
                raise AssertionError("cache exceeded its budget")  # cannot happen: slots bound every class
    return res


def prefetch_schedule(seconds: Sequence[float], fetch_bytes: Sequence[int], bandwidth: float,
                      max_distance: int | None = None) -> list[int]:
    """For each op ``i``, the op at whose start its tensors should be requested: the latest op ``j`` (going back
    cyclically) such that the compute time of ops ``j .. i-1`` covers the transfer ``fetch_bytes[i] / bandwidth``,
    at most ``max_distance`` ops back (and never more than one step back). Returns issue indices in ``[0, n)``."""
    n = len(seconds)
    limit = n - 1 if max_distance is None else min(max_distance, n - 1)
    out = []
    for i in range(n):
        need = fetch_bytes[i] / bandwidth if bandwidth > 0 else 0.0
        covered, d = 0.0, 1
        while d <= limit:
            covered += seconds[(i - d) % n]
            if covered >= need:
                break
            d += 1
        out.append((i - min(d, max(limit, 1))) % n)
    return out


def fetch_schedule(trace: Sequence[Op], fetches: Iterable[tuple[int, str, str | None]]) -> list[tuple[int, int, str,
                                                                                                   str | None]]:
    """Conservative prefetching (Cao et al., SIGMETRICS 1995) over the fetches of Belady's MIN: each fetch of
    ``key`` for op ``i`` that evicts ``victim`` is issued right after the victim's last use before ``i`` (one step
    ahead at most; at once when a slot is free), so the reads start as early as the budget allows and the disk
    moves exactly MIN's bytes. Returns ``(issue op, target op, key, victim)`` sorted by issue; positions are of one
    step, a target ``>= len(trace)`` belongs to the next step (its read starts in this one)."""
    n = len(trace)
    nu = NextUse(trace)
    out = []
    for i, key, victim in fetches:
        issue = i - n + 1
        pos = nu.positions.get(victim, []) if victim is not None else []
        if pos:
            j = bisect.bisect_left(pos, i) - 1
            issue = max(issue, (pos[j] if j >= 0 else pos[-1] - n) + 1)
        out.append((issue, i, key, victim) if issue >= 0 else (issue + n, i + n, key, victim))
    return sorted(out, key=lambda e: (e[0], e[1]))


def physical_limit(compute_seconds: float, bytes_moved: int, disk_bandwidth: float) -> float:
    """The fastest a step can be: max(compute, bytes moved over the disk / its measured bandwidth)."""
    return max(compute_seconds, bytes_moved / disk_bandwidth if disk_bandwidth > 0 else 0.0)
