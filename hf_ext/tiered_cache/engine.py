"""The tiered cache engine: which tensor lives where, moving it, and the chunked optimizer step.

Every managed tensor (a parameter, its gradient, each optimizer state of its shape) is a :class:`Block` with a
home (pinned host slot or NVMe file) and, while resident, a slot of the device pool. A non-resident parameter's
``.data`` is a 1-element tensor expanded to its shape (so autograd's layout checks still see the real shape, and
nothing is stored). Residency is a per-size-class cache: misses load synchronously (stall), the planned schedule
loads ahead on worker threads, and eviction follows the configured policy (Belady's MIN over the profiled order).
Only the main thread changes residency; workers only copy bytes.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import torch
from transformers.utils import logging

from .config import TieredCacheConfig
from .metrics import TieredCacheStats, Timeline
from .planner import (
    HOST,
    NVME,
    NextUse,
    choose_victim,
    fetch_schedule,
    first_use_order,
    fuse_updates,
    homes_by_misses,
    prefetch_schedule,
    simulate,
)
from .pools import SlotPool
from .profiler import TraceRecorder
from .storage import NvmeStore, TieredCacheError

logger = logging.get_logger(__name__)


@dataclass(eq=False)
class Block:
    key: str
    nbytes: int
    dtype: torch.dtype
    shape: torch.Size
    kind: str  # "param", "grad" or "state"
    home: str = HOST
    tensor: torch.Tensor | None = None  # whose .data is swapped (parameters, states); None for gradients
    dev_slot: int | None = None
    host_slot: int | None = None
    on_home: bool = False  # the home copy is current
    live: bool = True  # gradients: False between optimizer steps
    pending: Future | None = None
    pins: int = 0
    norm: torch.Tensor | None = None
    last_use: float = 0.0
    arrived: float = 0.0


class CacheCore:
    """Residency, transfers and statistics (the hooks live in :mod:`.attach`)."""

    def __init__(self, config: TieredCacheConfig, device: torch.device):
        self.config = config
        self.device = device
        self.cuda = device.type == "cuda"
        self.blocks: dict[str, Block] = {}
        self.stats = TieredCacheStats()
        self.timeline = Timeline()
        self.pool = ThreadPoolExecutor(max_workers=config.io_threads, thread_name_prefix="hf_ext_tiered")
        self.nvme: NvmeStore | None = None
        self.dev: SlotPool | None = None
        self.host: SlotPool | None = None
        self.resident: dict[int, set[str]] = {}
        self.slot_owner: dict[int, str] = {}
        self._slot_writes: dict[int, tuple[str, Future]] = {}
        self.failed_writes: dict[str, int] = {}
        self._slot_free_events: dict[int, torch.cuda.Event] = {}  # key -> the slot still holding its value
        self._placeholders: dict[torch.dtype, torch.Tensor] = {}
        self.recorder: TraceRecorder | None = TraceRecorder()
        self.trace = None
        self.next_use: NextUse | None = None
        self.issue_map: dict[int, list[int]] = {}
        self.cursor = 0
        self.fetch_plan: list[tuple[int, int, str, str | None]] = []  # (issue op, target op, key, victim)
        self.fetch_next = 0  # the first entry of fetch_plan not yet issued in this step
        self.planned_late = 0  # planned reads whose earliest start leaves less compute than their transfer needs
        self.fuse = False  # the plan runs each update right after its gradient (set by the optimizer glue)
        self.now = 0
        self.clock = 0.0
        self.allocations = 0
        self.copy_stream = torch.cuda.Stream(device) if self.cuda else None
        self._lock = threading.Lock()
        self._tls = threading.local()
        self.closed = False
        self.rehomed = 0

    # ------------------------------------------------------------------------------------------------ helpers
    def placeholder(self, dtype: torch.dtype, shape: torch.Size) -> torch.Tensor:
        base = self._placeholders.get(dtype)
        if base is None:
            base = self._placeholders[dtype] = torch.zeros(1, dtype=dtype, device=self.device)
        return base.expand(shape) if len(shape) else base[0]

    def view(self, b: Block) -> torch.Tensor:
        return self.dev.view(b.dev_slot, b.dtype, b.shape)

    def _account(self, link: str, nbytes: int, t0: float) -> None:
        t1 = time.perf_counter()
        with self._lock:
            self.stats.bytes[link] += nbytes
            self.stats.busy_seconds[link] += t1 - t0
        self.timeline.add(link, t0, t1)

    # ------------------------------------------------------------------------------------------------ transfers
    def _load_task(self, b: Block, slot: int, wait_for: list[Future]) -> None:
        for f in wait_for:
            f.result()
        t0 = time.perf_counter()
        dst = self.dev.raw(slot)
        if self.cuda and slot in self._slot_free_events:  # kernels queued on the old tenant must finish first
            self.copy_stream.wait_event(self._slot_free_events[slot])
        if b.home == HOST:
            with torch.cuda.stream(self.copy_stream) if self.cuda else _null():
                dst[:b.nbytes].copy_(self.host.raw(b.host_slot)[:b.nbytes], non_blocking=self.cuda)
            if self.cuda:
                self.copy_stream.synchronize()
            self._account("host->device", b.nbytes, t0)
        else:
            if self.cuda:
                staging = self._staging(b.nbytes)
                self.nvme.read(b.key, staging, b.nbytes)
                with torch.cuda.stream(self.copy_stream):
                    dst[:b.nbytes].copy_(staging[:b.nbytes], non_blocking=True)
                self.copy_stream.synchronize()
            else:
                self.nvme.read(b.key, dst, b.nbytes)
            self._account("nvme->device", b.nbytes, t0)

    def _store_task(self, b: Block, slot: int, ready: torch.cuda.Event | None) -> None:
        t0 = time.perf_counter()
        src = self.dev.raw(slot)
        if ready is not None:
            self.copy_stream.wait_event(ready)  # compute on the slot has finished
        if b.home == HOST:
            with torch.cuda.stream(self.copy_stream) if self.cuda else _null():
                self.host.raw(b.host_slot)[:b.nbytes].copy_(src[:b.nbytes], non_blocking=self.cuda)
            if self.cuda:
                self.copy_stream.synchronize()
            self._account("device->host", b.nbytes, t0)
        else:
            if self.cuda:
                staging = self._staging(b.nbytes)
                with torch.cuda.stream(self.copy_stream):
                    staging[:b.nbytes].copy_(src[:b.nbytes], non_blocking=True)
                self.copy_stream.synchronize()
                src = staging
            self.nvme.write(b.key, src, b.nbytes)
            self._account("device->nvme", b.nbytes, t0)

    def _staging(self, nbytes: int) -> torch.Tensor:
        """A pinned bounce buffer per I/O thread (CUDA + NVMe only), allocated once per thread."""
        buf = getattr(self._tls, "buf", None)
        if buf is None or buf.numel() < nbytes:
            big = max(self.dev.slots) if self.dev.slots else nbytes
            buf = self._tls.buf = SlotPool({big: 1}, "cpu", pin=True, name="staging").raw(0)
            with self._lock:
                self.allocations += 1
        return buf

    # ------------------------------------------------------------------------------------------------ residency
    def _victim(self, size: int, protect: set[str]) -> str | None:
        cands = [k for k in self.resident[size] if k not in protect and self.blocks[k].pins == 0
                 and (self.blocks[k].pending is None or self.blocks[k].pending.done())]
        planned = self.next_use is not None and self.config.eviction == "belady"
        policy = self.config.eviction if (planned or self.config.eviction != "belady") else "lru"
        last = {k: self.blocks[k].last_use for k in cands}
        arrived = {k: self.blocks[k].arrived for k in cands}
        return choose_victim(cands, policy, self.now, self.next_use if planned else None, last, arrived)

    def _evict(self, k: str) -> None:
        b = self.blocks[k]
        slot = b.dev_slot
        if b.pending is not None:
            b.pending.result()
            b.pending = None
        ready = None
        if self.cuda:
            ready = torch.cuda.Event()
            ready.record()  # on the compute stream: the point after which the slot may be overwritten
            self._slot_free_events[slot] = ready
        if b.live and not b.on_home:
            self._slot_writes[slot] = (k, self.pool.submit(self._store_task, b, slot, ready))
            b.on_home = True  # confirmed (or the failure surfaced) in _reap
        self.resident[b.nbytes].discard(k)
        self.slot_owner.pop(slot, None)
        b.dev_slot = None
        if b.tensor is not None:
            b.tensor.data = self.placeholder(b.dtype, b.shape)
        self.dev.release(slot)
        self.stats.evictions += 1

    def _acquire(self, b: Block, protect: set[str], limit: float | None = None) -> int | None:
        """A device slot for ``b``; with ``limit`` (prefetch) only by evicting a block needed later than that."""
        slot = self.dev.acquire(b.nbytes)
        if slot is None:
            victim = self._victim(b.nbytes, protect)
            if victim is None and limit is None:  # prefetches in flight hold the slots: let them land
                for k in list(self.resident[b.nbytes]):
                    self._wait(self.blocks[k])
                victim = self._victim(b.nbytes, protect)
            if victim is None:
                if limit is not None:
                    return None
                raise TieredCacheError(
                    f"All {self.dev.slots.get(b.nbytes, 0)} device slots of {b.nbytes} bytes are in use for "
                    f"{b.key!r}: raise device_budget or min_device_slots.")
            if limit is not None and self.next_use is not None and self.next_use.after(victim, self.now) <= limit:
                return None  # Belady: the resident one is needed sooner than what we would bring
            self._evict(victim)
            slot = self.dev.acquire(b.nbytes)
        b.dev_slot = slot
        b.arrived = self.clock
        self.resident[b.nbytes].add(b.key)
        self.slot_owner[slot] = b.key
        return slot

    def _start_load(self, b: Block, slot: int) -> Future:
        # Wait for the slot's previous tenant to be written back, and for a write-back of ``b`` itself still in
        # flight from the slot it was evicted from (else the load reads a half-written home copy).
        deps = [f for s, (k, f) in self._slot_writes.items() if s == slot or k == b.key]
        return self.pool.submit(self._load_task, b, slot, deps)

    def ensure(self, key: str, protect: set[str]) -> Block:
        """Make ``key`` resident on the device (waiting if needed) and point its tensor there."""
        b = self.blocks[key]
        self.clock += 1
        b.last_use = self.clock
        if not b.live:  # a gradient about to be written: a slot, nothing to load
            self.wait_slot(self._acquire(b, protect))
            b.live, b.on_home = True, False
            return b
        t0 = time.perf_counter()
        if b.dev_slot is not None:
            if b.pending is not None and not b.pending.done():
                self.stats.late_prefetches += 1
                self.stats.device_misses += 1
            else:
                self.stats.device_hits += 1
            self._wait(b)
        else:
            self.stats.device_misses += 1
            if b.home == HOST:
                self.stats.host_hits += 1
            else:
                self.stats.nvme_reads += 1
            slot = self._acquire(b, protect)
            b.pending = self._start_load(b, slot)
            self._wait(b)
        stall = time.perf_counter() - t0
        if stall > 1e-5:
            self.stats.stall_seconds += stall
            self.timeline.add("stall", t0, t0 + stall)
        if b.tensor is not None:
            b.tensor.data = self.view(b)
        return b

    def wait_slot(self, slot: int) -> None:
        """Before writing into ``slot`` without loading: its previous tenant's write-back must be done."""
        wf = self._slot_writes.get(slot)
        if wf is not None:
            try:
                wf[1].result()
            except OSError as e:
                raise TieredCacheError(f"Writing {wf[0]!r} back failed ({e}); training stops, weights kept.") from e

    def _wait(self, b: Block) -> None:
        if b.pending is not None:
            try:
                b.pending.result()
            except OSError as e:
                self.resident[b.nbytes].discard(b.key)
                self.slot_owner.pop(b.dev_slot, None)
                b.dev_slot, b.pending = None, None
                raise TieredCacheError(f"Tiered cache I/O failed ({e}); training stops, weights kept.") from e
            b.pending = None

    def prefetch(self, pos: int) -> None:
        """Issue loads ahead of op ``pos``: with ``prefetch_distance``, that many ops ahead; else the plan's
        conservative schedule (:func:`~.planner.fetch_schedule`: each of MIN's reads as soon as its victim is
        dead), in order; an entry whose victim is still in use waits for a later op and holds back the rest."""
        protect = set(self.trace[pos].keys)
        if self.config.prefetch_distance:
            for target in self.issue_map.get(pos, ()):
                for k in self.trace[target].keys:
                    if self._prefetch_key(k, None, protect) is False:
                        return
            return
        plan = self.fetch_plan
        while self.fetch_next < len(plan) and plan[self.fetch_next][0] <= pos:
            _, target, k, victim = plan[self.fetch_next]
            if target > pos and self._prefetch_key(k, victim, protect) is False:
                return
            self.fetch_next += 1

    def _prefetch_key(self, k: str, victim: str | None, protect: set[str]) -> bool | None:
        """Start loading ``k`` (evicting ``victim`` when the plan names one and it is idle); False when refused,
        None when there is nothing to do."""
        b = self.blocks.get(k)
        if b is None or b.dev_slot is not None or not b.live:
            return None
        vb = self.blocks.get(victim) if victim is not None else None
        if vb is not None and vb.dev_slot is not None and vb.nbytes == b.nbytes and not self.dev.free.get(b.nbytes):
            if vb.key in protect or vb.pins or (vb.pending is not None and not vb.pending.done()):
                return False  # still in use: the plan's read waits for it
            self._evict(vb.key)
        slot = self._acquire(b, protect, limit=self.next_use.after(k, self.now))
        if slot is None:
            return False
        b.pending = self._start_load(b, slot)
        self.stats.prefetches += 1
        return True

    def reap(self) -> None:
        """Confirm finished write-backs; a failed one (a full disk) stops training with a clear error."""
        for slot, (k, fut) in list(self._slot_writes.items()):
            if fut.done():
                del self._slot_writes[slot]
                if fut.exception() is not None:
                    self.blocks[k].on_home = False
                    self.failed_writes[k] = slot
                    raise TieredCacheError(f"Writing {k!r} to the {self.blocks[k].home} tier failed "
                                           f"({fut.exception()}); training stops, weights kept in memory.")

    # ------------------------------------------------------------------------------------------------ planning
    def plan(self) -> None:
        """Turn the profiled trace into the eviction future and the prefetch schedule."""
        prof = self.recorder.finish(self.stats.stall_seconds)
        self.recorder = None
        self.trace = [op for op in prof.ops if all(k in self.blocks for k in op.keys)]
        if self.fuse:
            self.trace = fuse_updates(self.trace)
        self.next_use = NextUse(self.trace)
        sizes = {k: b.nbytes for k, b in self.blocks.items()}
        self.sim = sim = simulate(self.trace, sizes, self.dev.slots, self.config.eviction, steps=2)
        self.rehome(sim)
        if self.config.prefetch:
            per_op = sim.miss_bytes_by_op  # what the plan's cache will not hold at each op
            bw = max((self.stats.bandwidth(link) * self.config.io_threads for link in ("nvme->device",
                                                                                   "host->device")), default=0.0)
            n = len(self.trace)
            # the op at which each op's reads must start for compute to cover them (measured time and bandwidth)
            need = prefetch_schedule([op.seconds for op in self.trace], per_op, bw or 1e9)
            if self.config.prefetch_distance:
                self.issue_map = {}
                for i in range(n):
                    self.issue_map.setdefault((i - self.config.prefetch_distance) % n, []).append(i)
            self.fetch_plan = fetch_schedule(self.trace, sim.fetches)
            # reads the budget cannot start early enough (their victim is still needed): they will stall
            self.planned_late = sum(1 for issue, target, _, _ in self.fetch_plan
                                    if target - issue < (target - need[target % n]) % n)
        logger.info("Tiered cache planned over %d ops (%d tensors); %d of %d planned reads cannot start early enough.",
                    n if self.config.prefetch else len(self.trace), len(self.blocks), self.planned_late,
                    len(self.fetch_plan))

    def rehome(self, sim) -> None:
        """Re-place the off-device copies from the plan (:func:`homes_by_misses`), moving the bytes that must move:
        first the copies leaving the host for NVMe (freeing their host slots), then those coming up from NVMe."""
        if self.nvme is None or not self.host.capacity:
            return
        for b in self.blocks.values():  # nothing may be in flight to or from a home while homes change
            self._wait(b)
        for slot in list(self._slot_writes):
            self.wait_slot(slot)
        self.reap()
        used = first_use_order(self.trace)
        seen = set(used)
        keys = used + [k for k in self.blocks if k not in seen]
        sizes = {k: self.blocks[k].nbytes for k in keys}
        host = dict(self.host.slots)
        new = homes_by_misses(sim, keys, sizes, host, nvme=True)
        down = [self.blocks[k] for k in keys if self.blocks[k].home == HOST and new[k] == NVME]
        up = [self.blocks[k] for k in keys if self.blocks[k].home == NVME and new[k] == HOST]
        for b in down:
            if b.on_home and b.live:
                self.nvme.write(b.key, self.host.raw(b.host_slot), b.nbytes)
            self.host.release(b.host_slot)
            b.host_slot, b.home = None, NVME
        for b in up:
            b.host_slot, b.home = self.host.acquire(b.nbytes), HOST
            if b.on_home and b.live:
                self.nvme.read(b.key, self.host.raw(b.host_slot), b.nbytes)
        self.rehomed = len(up)

    def locate(self, name: str) -> int | None:
        """Position of op ``name`` in the trace from the cursor on (resynchronising after a deviation)."""
        if self.trace is None:
            return None
        n = len(self.trace)
        for j in range(self.cursor, n):
            if self.trace[j].name == name:
                self.cursor = j + 1
                return j
        return None

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.pool.shutdown(wait=True)
        if self.nvme is not None:
            self.nvme.close()


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False
