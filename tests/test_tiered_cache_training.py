"""Tiered cache on a tiny OPT: profile order, bitwise-identical training (manual loop and Trainer), no allocation
after warm-up, NVMe files removed, a full disk aborting with the weights intact, hooks removed cleanly."""

from __future__ import annotations

import pytest
import torch

from hf_ext.common.models import tiny_model
from hf_ext.tiered_cache.attach import TieredEngine
from hf_ext.tiered_cache.config import TieredCacheConfig
from hf_ext.tiered_cache.profiler import module_order
from hf_ext.tiered_cache.storage import TieredCacheError
from tests.tiered_train import batches as _batches
from tests.tiered_train import train as _train

BUDGET = 900_000  # bytes: about half of the tiny OPT's training state (params + grads + Adam m, v)


def _cfg(tmp_path=None, **kw):
    kw.setdefault("device_pool_divisor", 1.0)
    return TieredCacheConfig(device_budget=BUDGET, nvme_path=None if tmp_path is None else str(tmp_path), **kw)


@pytest.mark.parametrize("accum,clip", [(1, None), (2, None), (1, 0.5), (2, 0.5)])
def test_training_is_bitwise_identical_with_nvme_tier(tmp_path, accum, clip):
    ref_losses, ref_params, _ = _train(steps=3, accum=accum, clip=clip)
    losses, params, stats = _train(_cfg(tmp_path), steps=3, accum=accum, clip=clip)
    assert losses == ref_losses
    assert all(torch.equal(a, b) for a, b in zip(ref_params, params))
    assert stats.bytes["nvme->device"] > 0 and stats.bytes["device->nvme"] > 0  # the NVMe tier really ran
    assert not any(tmp_path.iterdir())  # files removed at the end


@pytest.mark.parametrize("eviction,prefetch", [("lru", False), ("fifo", True)])
def test_baseline_policies_and_host_tier_are_bitwise_identical(eviction, prefetch):
    ref_losses, ref_params, _ = _train(steps=3, clip=1.0)
    losses, params, stats = _train(_cfg(eviction=eviction, prefetch=prefetch), steps=3, clip=1.0)
    assert losses == ref_losses and all(torch.equal(a, b) for a, b in zip(ref_params, params))
    assert stats.bytes["host->device"] > 0 and stats.bytes["nvme->device"] == 0


def test_profile_order_equals_module_execution_order():
    model, _ = tiny_model("opt")
    ids = _batches(1)[0]
    expected = module_order(model, input_ids=ids)
    opt = torch.optim.AdamW(model.parameters())
    with TieredEngine(_cfg(), model, opt) as eng:
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        fwd = [op.name[4:] for op in eng.trace if op.name.startswith("fwd:")]
        bwd = [op.name for op in eng.trace if op.name.startswith("bwd:")]
        assert fwd == expected
        assert bwd and any(op.name.startswith("step:") and len(op.keys) == 4 for op in eng.trace)


def test_no_allocation_after_warm_up_and_prefetch_helps(tmp_path):
    counts = []
    _, _, stats = _train(_cfg(tmp_path), steps=5,
                         hook=lambda step, eng: counts.append(eng.summary().allocations))
    assert counts[1:] == [counts[1]] * (len(counts) - 1)
    assert stats.prefetches > 0 and 0 < stats.device_pool_utilization <= 1


def test_nvme_files_removed_after_an_exception(tmp_path):
    model, _ = tiny_model("opt")
    opt = torch.optim.AdamW(model.parameters())
    with pytest.raises(RuntimeError, match="boom"):
        with TieredEngine(_cfg(tmp_path), model, opt) as eng:
            assert any(eng.nvme.root.glob("*.bin"))
            raise RuntimeError("boom")
    assert not any(tmp_path.iterdir())
    assert all(p.numel() == p.data.untyped_storage().nbytes() // 4 for p in model.parameters())


def test_full_disk_mid_run_aborts_with_weights_intact(tmp_path):
    ref_params = _train(steps=1)[1]  # the weights after the one step that completes
    model, _ = tiny_model("opt")
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    batches = _batches(2)
    eng = TieredEngine(_cfg(tmp_path), model, opt)
    with pytest.raises(TieredCacheError, match="training stops"):
        try:
            for i, ids in enumerate(batches):
                if i == 1:
                    eng.nvme.fault_after_writes = eng.nvme.writes  # the disk is full from now on
                model(input_ids=ids, labels=ids).loss.backward()
                opt.step()
                opt.zero_grad()
        finally:
            eng.detach()
    assert all(torch.equal(a, b) for a, b in zip(ref_params, model.parameters()))
    assert not any(tmp_path.iterdir())


def test_too_small_budget_and_bad_path_fail_before_training(tmp_path):
    model, _ = tiny_model("opt")
    with pytest.raises(ValueError, match="smallest working set"):
        TieredEngine(TieredCacheConfig(device_budget=1000), model, torch.optim.AdamW(model.parameters()))
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(ValueError, match="nvme_path"):
        TieredEngine(_cfg(f), model, torch.optim.AdamW(model.parameters()))
    assert all(p.data.numel() == p.numel() and p.data.stride() != (0, 0) for p in model.parameters())


def test_detach_removes_hooks_and_outputs_match():
    model, _ = tiny_model("opt")
    ids = _batches(1)[0]
    with torch.no_grad():
        ref = model(input_ids=ids).logits
    eng = TieredEngine(_cfg(), model)
    with torch.no_grad():
        out = model(input_ids=ids).logits
    eng.detach()
    assert torch.equal(ref, out)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_timeline_png_written(tmp_path):
    png = tmp_path / "timeline.png"
    _train(_cfg(tmp_path / "nvme", timeline_path=str(png)), steps=3)
    assert png.stat().st_size > 1000


def _trainer_run(tmp_path, callback=None, steps=3, **extra):
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    model, _ = tiny_model("opt")
    ids = torch.cat(_batches(steps * 2 * 2))
    ds = Dataset.from_dict({"input_ids": ids.tolist(), "labels": ids.tolist()})
    kw = dict(output_dir=str(tmp_path / "out"), max_steps=steps, per_device_train_batch_size=2,
              gradient_accumulation_steps=2, max_grad_norm=0.5, logging_steps=1, save_strategy="no", report_to=[],
              use_cpu=True, optim="adamw_torch", learning_rate=1e-2, seed=0, dataloader_num_workers=0,
              disable_tqdm=True)
    args = TrainingArguments(**{**kw, **extra})
    trainer = Trainer(model, args, train_dataset=ds, callbacks=[callback] if callback else None)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return losses, [p.detach().clone() for p in model.parameters()]


def test_trainer_callback_bitwise_identical_and_logs(tmp_path):
    from hf_ext.tiered_cache.callback import TieredCacheCallback

    ref_losses, ref_params = _trainer_run(tmp_path)
    with TieredCacheCallback(_cfg(tmp_path / "nvme")) as cb:
        losses, params = _trainer_run(tmp_path, cb)
    assert losses == ref_losses and all(torch.equal(a, b) for a, b in zip(ref_params, params))
    assert cb.log_history and "tiered/device_hit_rate" in cb.log_history[-1]
    first = cb.log_history[0]  # the Trainer's keys are kept, ours added to a copy
    assert "loss" in first and first["tiered/grad_norm"] > 0
    assert not any((tmp_path / "nvme").iterdir())


def test_planner_rehomes_host_slots_to_the_most_missed_tensors(tmp_path):
    cfg = TieredCacheConfig(device_budget=BUDGET, host_budget=300_000, nvme_path=str(tmp_path),
                            device_pool_divisor=1.0, host_pool_divisor=1.0, host_extra_slots=0)
    ref_losses, ref_params, _ = _train(steps=3, clip=1.0)
    seen = {}

    def check(step, eng):
        if step == 0:  # planned after the profiling step
            seen["host"] = {k for k, b in eng.blocks.items() if b.home == "host"}
            miss = eng.sim.misses_by_key
            for k, b in eng.blocks.items():
                if b.home == "nvme":  # no NVMe copy is missed more often than a host copy of its size
                    assert all(miss[k] <= miss[h] for h in seen["host"] if eng.blocks[h].nbytes == b.nbytes)
    losses, params, stats = _train(cfg, steps=3, clip=1.0, hook=check)
    assert losses == ref_losses and all(torch.equal(a, b) for a, b in zip(ref_params, params))
    assert seen["host"] and stats.bytes["host->device"] > 0 and stats.bytes["nvme->device"] > 0


def test_cli_bench_and_demo_row(capsys):
    from hf_ext.cli import main
    from hf_ext.tiered_cache.demo import demo_rows

    assert main(["bench", "tiered-cache", "--steps", "1"]) == 0
    assert "losses equal: True" in capsys.readouterr().out
    rows = demo_rows(None, None, None)
    assert rows[0].value > 0 and "losses equal: True" in rows[0].note


def test_trainer_checkpoint_mid_training_saves_plain_weights(tmp_path):
    from safetensors.torch import load_file

    from hf_ext.tiered_cache.callback import TieredCacheCallback

    kw = dict(save_strategy="steps", save_steps=2, save_only_model=True)
    ref_losses, _ = _trainer_run(tmp_path / "ref", **kw)
    with TieredCacheCallback(_cfg(tmp_path / "nvme")) as cb:
        losses, _ = _trainer_run(tmp_path / "ours", cb, **kw)
    assert losses == ref_losses
    ref = load_file(tmp_path / "ref" / "out" / "checkpoint-2" / "model.safetensors")
    ours = load_file(tmp_path / "ours" / "out" / "checkpoint-2" / "model.safetensors")
    assert ref.keys() == ours.keys() and all(torch.equal(ref[k], ours[k]) for k in ref)
