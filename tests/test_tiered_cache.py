"""Tiered cache: planning math on hand-made traces, pools, the NVMe store's safety checks, the config."""

from __future__ import annotations

import os
import random

import pytest
import torch

from hf_ext.tiered_cache.config import TieredCacheConfig, parse_bytes
from hf_ext.tiered_cache.planner import (
    DEVICE,
    HOST,
    NVME,
    NextUse,
    Op,
    choose_victim,
    device_slots,
    host_slots,
    place,
    prefetch_schedule,
    simulate,
    size_histogram,
)
from hf_ext.tiered_cache.pools import ALIGN, SlotPool
from hf_ext.tiered_cache.storage import NvmeStore, TieredCacheError, check_nvme_path, remove_stale_runs


def test_config_round_trip_and_errors():
    cfg = TieredCacheConfig(device_budget="8GiB", host_budget="512MB", eviction="lru")
    assert cfg.device_budget == 8 * 2**30 and cfg.host_budget == 512 * 10**6
    assert TieredCacheConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="Unknown TieredCacheConfig keys"):
        TieredCacheConfig.from_dict({"buffer_count": 5})
    with pytest.raises(ValueError, match="eviction"):
        TieredCacheConfig(eviction="random")
    with pytest.raises(ValueError, match="device_budget"):
        TieredCacheConfig(device_budget="lots")
    with pytest.raises(ValueError, match="io_threads"):
        TieredCacheConfig(io_threads=0)
    assert parse_bytes("1.5KiB") == 1536


def test_belady_evicts_the_farthest_next_use():
    # cache of 2 slots holds a, b; c arrives at op 2; a is used again at op 3, b only at op 5 -> evict b
    trace = [Op("0", ("a",)), Op("1", ("b",)), Op("2", ("c",)), Op("3", ("a",)), Op("4", ("c",)), Op("5", ("b",))]
    nu = NextUse(trace)
    assert nu.after("a", 2) == 3 and nu.after("b", 2) == 5 and nu.after("b", 5) == 1 + 6
    assert choose_victim(["a", "b"], "belady", 2, nu, {"a": 0, "b": 1}, {"a": 0, "b": 1}) == "b"
    assert choose_victim(["a", "b"], "lru", 2, nu, {"a": 0, "b": 1}, {"a": 0, "b": 1}) == "a"
    assert choose_victim(["a", "b"], "fifo", 2, nu, {"a": 5, "b": 1}, {"a": 0, "b": 1}) == "a"
    sizes = dict.fromkeys("abc", 4)
    res = simulate(trace, sizes, {4: 2}, "belady", steps=1)
    assert res.evictions[0] == (2, "b")
    assert simulate(trace, sizes, {4: 2}, "belady", steps=1).misses < simulate(trace, sizes, {4: 2}, "lru",
                                                                                   steps=1).misses


def test_belady_is_never_worse_than_lru_or_fifo_and_never_exceeds_the_budget():
    rng = random.Random(0)
    for _ in range(30):
        keys = [f"t{i}" for i in range(12)]
        sizes = {k: rng.choice([256, 1024, 4096]) for k in keys}
        trace = [Op(str(i), tuple(rng.sample(keys, 2))) for i in range(40)]
        hist = size_histogram(sizes)
        slots = {s: max(2, c // 2) for s, c in hist.items()}
        cap = sum(s * n for s, n in slots.items())
        results = {p: simulate(trace, sizes, slots, p, steps=3) for p in ("belady", "lru", "fifo")}
        for r in results.values():
            assert r.peak_bytes <= cap
        assert results["belady"].misses <= min(results["lru"].misses, results["fifo"].misses)


def test_paper_slot_rules_and_budget():
    hist = {100: 10, 1000: 4}  # bytes -> count; shares 1000/5000 and 4000/5000
    dev = device_slots(hist, budget=5000, divisor=2.5, min_slots=1)
    assert dev == {100: min(round(0.2 * 5000 / 2.5 / 100), 10), 1000: min(round(0.8 * 5000 / 2.5 / 1000), 4)}
    assert sum(s * n for s, n in dev.items()) <= 5000
    host = host_slots(hist, dev, budget=2000, divisor=2.0, extra=12)
    assert sum(s * n for s, n in host.items()) <= 2000
    with pytest.raises(ValueError, match="smallest working set"):
        device_slots(hist, budget=1000, min_slots=5)
    for budget in (5400, 7000, 20000):  # the floor raised some classes: the trim keeps the pool within budget
        assert sum(s * n for s, n in device_slots(hist, budget, 1.0, 4).items()) <= budget


def test_placement_fills_device_then_host_then_nvme():
    sizes = dict.fromkeys("abcde", 8)
    out = place(list("abcde"), sizes, {8: 2}, {8: 1}, nvme=True)
    assert out == {"a": DEVICE, "b": DEVICE, "c": HOST, "d": NVME, "e": NVME}
    with pytest.raises(ValueError, match="no NVMe tier"):
        place(list("abcde"), sizes, {8: 2}, {8: 1}, nvme=False)


def test_prefetch_schedule_covers_the_transfer_with_compute():
    seconds = [1.0] * 6
    # 2.5 s of transfer for op 4 needs 3 ops of compute before it: issued at op 1
    issue = prefetch_schedule(seconds, [0, 0, 0, 0, 2_500, 0], bandwidth=1_000)
    assert issue[4] == 1 and issue[1] == 0
    assert prefetch_schedule(seconds, [10**9] * 6, bandwidth=1.0, max_distance=2)[3] == 1


def test_pool_reuses_aligned_slots_without_allocating():
    pool = SlotPool({4: 2, 5000: 1})
    assert pool.allocations == 1
    a, b = pool.acquire(4), pool.acquire(4)
    assert pool.acquire(4) is None
    assert pool.raw(a).data_ptr() % ALIGN == 0 and pool.find(pool.raw(b).data_ptr() + 3) == b
    pool.release(a)
    assert pool.acquire(4) == a and pool.allocations == 1
    big = pool.acquire(5000)
    assert pool.view(big, torch.float32, (1250,)).numel() == 1250 and pool.raw(big).numel() == 8192


def test_nvme_store_rejects_stale_and_corrupt_files(tmp_path):
    pool = SlotPool({4096: 2})
    s = pool.acquire(4096)
    pool.view(s, torch.float32, (1024,)).copy_(torch.arange(1024.0))
    store = NvmeStore(tmp_path)
    store.write("w", pool.raw(s), 4096)
    t = pool.acquire(4096)
    store.read("w", pool.raw(t), 4096)
    assert torch.equal(pool.view(t, torch.float32, (1024,)), torch.arange(1024.0))
    other = NvmeStore(tmp_path)  # a restarted run: same key, other run id -> never valid
    other._gen["w"] = 1
    os.link(next(store.root.glob("*.bin")), next(iter([other.root])) / next(store.root.glob("*.bin")).name)
    with pytest.raises(TieredCacheError, match="stale"):
        other.read("w", pool.raw(t), 4096)
    f = next(store.root.glob("*.bin"))
    with open(f, "r+b") as fh:  # flip a payload byte
        fh.seek(ALIGN + 10)
        byte = fh.read(1)
        fh.seek(ALIGN + 10)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(TieredCacheError, match="checksum"):
        store.read("w", pool.raw(t), 4096)
    root = store.root
    store.close()
    other.close()
    assert not root.exists()


def test_stale_run_folders_of_dead_processes_are_removed(tmp_path):
    d = tmp_path / "hf_ext_tiered_deadbeef"
    d.mkdir()
    (d / "owner.json").write_text('{"pid": 999999999, "run_id": "x"}')
    (tmp_path / "hf_ext_tiered_notours").mkdir()  # no owner file: not ours, kept
    assert remove_stale_runs(tmp_path) == 1
    assert not d.exists() and (tmp_path / "hf_ext_tiered_notours").exists()


def test_nvme_path_checks_fail_early(tmp_path):
    with pytest.raises(ValueError, match="GiB free"):
        check_nvme_path(tmp_path, 1 << 60)
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValueError, match="cannot be created|not a folder"):
        check_nvme_path(f / "sub", 10)
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        with pytest.raises(ValueError, match="not writable"):
            check_nvme_path(ro, 10)


def test_simulation_reports_missed_bytes_per_op_of_the_steady_step():
    trace = [Op("0", ("a",)), Op("1", ("b",)), Op("2", ("a",))]
    res = simulate(trace, {"a": 4, "b": 8}, {4: 1, 8: 1}, "belady", steps=2)
    assert res.miss_bytes_by_op == [0, 0, 0]  # everything fits: the second step misses nothing
    res = simulate(trace, {"a": 4, "b": 4}, {4: 1}, "belady", steps=2)
    assert res.miss_bytes_by_op == [0, 4, 4] and res.misses_by_key["b"] == 2
