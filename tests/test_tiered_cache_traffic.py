"""Traffic rules of the tiered cache: a clean eviction writes nothing, gradients stay off NVMe when each update
runs as its gradient completes, prefetch as far as the budget allows, and the byte counters of the benchmark."""

from __future__ import annotations

import pytest
import torch

from hf_ext.common.models import tiny_model
from hf_ext.tiered_cache.attach import TieredEngine
from hf_ext.tiered_cache.bench import disk_bandwidth, lower_bound_bytes, proc_io
from hf_ext.tiered_cache.config import TieredCacheConfig
from hf_ext.tiered_cache.planner import Op, fetch_schedule, fuse_updates
from tests.tiered_train import train

BUDGET = 900_000


def _cfg(tmp_path, **kw):
    return TieredCacheConfig(device_budget=BUDGET, host_budget=0, nvme_path=str(tmp_path), device_pool_divisor=1.0,
                             **kw)


def _record_writes(eng):
    keys = []
    orig = eng.nvme.write

    def write(key, raw, nbytes):
        keys.append((key, nbytes))
        return orig(key, raw, nbytes)

    eng.nvme.write = write
    return keys


def test_fuse_updates_moves_each_update_after_its_last_gradient():
    trace = [Op("fwd:a", ("a",)), Op("grad:a", ("grad:a",)), Op("fwd:a", ("a",)), Op("grad:a", ("grad:a",)),
             Op("grad:b", ("grad:b",)), Op("step:a", ("a", "grad:a")), Op("step:b", ("b", "grad:b")),
             Op("step:c", ("c", "grad:c"))]
    names = [op.name for op in fuse_updates(trace)]
    assert names == ["fwd:a", "grad:a", "fwd:a", "grad:a", "step:a", "grad:b", "step:b", "step:c"]


def test_clean_evictions_write_nothing(tmp_path):
    model, _ = tiny_model("opt")
    ids = torch.randint(3, 300, (2, 16), generator=torch.Generator().manual_seed(0))
    cfg = TieredCacheConfig(device_budget=250_000, host_budget=0, nvme_path=str(tmp_path), device_pool_divisor=1.0,
                            min_device_slots=1)  # below the parameters' 550 kB: forwards must evict
    with TieredEngine(cfg, model) as eng, torch.no_grad():
        model(input_ids=ids)  # evicts the parameters adopted on the device: written once
        writes = _record_writes(eng)
        for _ in range(2):
            model(input_ids=ids)
        assert eng.stats.evictions > 0 and eng.stats.bytes["nvme->device"] > 0
        assert writes == []  # nothing was modified: every NVMe copy is still valid


def _train(cfg, steps=4, accum=1, hook=None, extra_forward=False):
    return train(cfg, steps=steps, accum=accum, hook=hook, extra_forward=extra_forward)


@pytest.mark.parametrize("accum", [1, 2])
def test_update_in_backward_keeps_gradients_off_nvme_and_is_bitwise(tmp_path, accum):
    ref_losses, ref_params, _ = _train(None, accum=accum)
    seen = {}

    def hook(name):
        def record(step, eng):
            if step == 0:  # planned: count the writes of the steady steps
                assert eng.fuse == (name == "on") and eng.accumulation_steps == accum
                seen[name] = _record_writes(eng)
        return record

    losses, params, _ = _train(_cfg(tmp_path), accum=accum, hook=hook("on"))
    assert losses == ref_losses and all(torch.equal(a, b) for a, b in zip(ref_params, params))
    spilled = [k for k, _ in seen["on"] if k.startswith("grad:")]
    assert seen["on"] and (accum > 1 or not spilled)  # accumulating micro-batches may spill, the last never
    _train(_cfg(tmp_path, update_in_backward=False), accum=accum, hook=hook("off"))
    assert sum(n for _, n in seen["on"]) < sum(n for _, n in seen["off"])  # the unfused step spills gradients
    if accum > 1:  # backward passes are counted, not forwards: an extra forward does not update early
        ref_extra = _train(None, accum=accum, extra_forward=True)[1]
        extra = _train(_cfg(tmp_path), accum=accum, extra_forward=True)[1]
        assert all(torch.equal(a, b) for a, b in zip(ref_extra, extra))


def test_conservative_prefetch_hits_more_and_reads_about_what_min_reads(tmp_path):
    _, _, far = _train(_cfg(tmp_path))
    _, _, near = _train(_cfg(tmp_path, prefetch_distance=1))
    _, _, demand = _train(_cfg(tmp_path, prefetch=False))  # Belady on demand: MIN's reads, no prefetch
    assert far.prefetches > 0 and far.device_misses < near.device_misses < demand.device_misses
    assert far.bytes["nvme->device"] <= 1.1 * demand.bytes["nvme->device"]


def test_fetch_schedule_issues_after_the_victims_last_use():
    trace = [Op("a", ("a",)), Op("b", ("b",)), Op("c", ("c",)), Op("a2", ("a",))]
    plan = fetch_schedule(trace, [(2, "c", "b"), (1, "b", None)])
    assert plan == [(2, 2, "c", "b"), (2, 5, "b", None)]  # b: a free slot, one step ahead; c: once b is done


def test_proc_io_counts_direct_io_and_lower_bound(tmp_path):
    before = proc_io()
    bw = disk_bandwidth(str(tmp_path), 8 << 20, threads=2)
    after = proc_io()
    assert bw["read"] > 0 and bw["write"] > 0 and bw["threads"] == 2
    if before is not None:  # Linux: O_DIRECT bytes show up in the process's block-I/O counters
        assert after["write_bytes"] - before["write_bytes"] >= 8 << 20
    assert lower_bound_bytes(param_bytes=100, device_budget=60) == 2 * (300 - 60)
    assert lower_bound_bytes(param_bytes=100, device_budget=400) == 0


def _trainer(tmp_path, callback=None):
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    model, _ = tiny_model("opt")
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 300, (12, 16), generator=g)
    ds = Dataset.from_dict({"input_ids": ids.tolist(), "labels": ids.tolist()})
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=2,
                             gradient_accumulation_steps=2, max_grad_norm=0.0, logging_steps=1, save_strategy="no",
                             report_to=[], use_cpu=True, optim="adamw_torch", learning_rate=1e-2, seed=0,
                             dataloader_num_workers=0, disable_tqdm=True)
    trainer = Trainer(model, args, train_dataset=ds, callbacks=[callback] if callback else None)
    trainer.train()
    return [h["loss"] for h in trainer.state.log_history if "loss" in h], [p.detach().clone() for p in
                                                                             model.parameters()]


def test_trainer_without_clipping_updates_in_backward_bitwise(tmp_path):
    from hf_ext.tiered_cache.callback import TieredCacheCallback

    ref_losses, ref_params = _trainer(tmp_path / "ref")
    seen = {}

    class Probe(TieredCacheCallback):
        def on_step_end(self, args, state, control, **kw):
            seen.setdefault("fuse", (self.engine.fuse, self.engine.accumulation_steps))
            return super().on_step_end(args, state, control, **kw)

    with Probe(_cfg(tmp_path / "nvme")) as cb:
        losses, params = _trainer(tmp_path / "ours", cb)
    assert seen["fuse"] == (True, 2)
    assert losses == ref_losses and all(torch.equal(a, b) for a, b in zip(ref_params, params))


def test_detach_gives_parameters_only_when_the_states_do_not_fit_in_memory(tmp_path, monkeypatch):
    ref_params = _train(None, steps=2)[1]
    model, _ = tiny_model("opt")
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    eng = TieredEngine(_cfg(tmp_path), model, opt)
    g = torch.Generator().manual_seed(1)
    for _ in range(2):
        ids = torch.randint(3, 300, (2, 16), generator=g)
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
    monkeypatch.setattr(eng, "_free_memory", lambda: 1000)  # far below parameters + Adam states
    eng.detach()
    assert all(torch.equal(a, b) for a, b in zip(ref_params, model.parameters()))
    assert not opt.state and not any(tmp_path.iterdir())
