"""Tiered cache under data parallelism: 2 CPU processes (gloo); losses equal the untiered DDP run. And the
accelerate plugin in one process."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hf_ext.common.models import tiny_model
from hf_ext.tiered_cache.config import TieredCacheConfig


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, tiered: bool, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    from hf_ext.tiered_cache.attach import TieredEngine

    model, _ = tiny_model("opt")
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    eng = None
    if tiered:
        eng = TieredEngine(TieredCacheConfig(device_budget=900_000, device_pool_divisor=1.0), model, opt,
                           max_grad_norm=0.5, world_size=2)
        run = model
    else:
        run = torch.nn.parallel.DistributedDataParallel(model)
    g = torch.Generator().manual_seed(10 + rank)  # each rank its own data
    losses = []
    for _ in range(3):
        ids = torch.randint(3, 300, (2, 16), generator=g)
        loss = run(input_ids=ids, labels=ids).loss
        loss.backward()
        losses.append(loss.item())
        if not tiered:
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        opt.step()
        opt.zero_grad()
    if eng is not None:
        eng.detach()
    torch.save({"losses": losses, "params": [p.detach().clone() for p in model.parameters()]}, f"{out}.{rank}")
    dist.destroy_process_group()


def _run(tmp_path, tiered: bool):
    out = str(tmp_path / ("tiered" if tiered else "ddp"))
    mp.spawn(_worker, args=(_free_port(), tiered, out), nprocs=2, join=True)
    return [torch.load(f"{out}.{r}") for r in range(2)]


def test_two_process_gloo_losses_equal_untiered_ddp(tmp_path):
    ref = _run(tmp_path, tiered=False)
    ours = _run(tmp_path, tiered=True)
    for r in range(2):
        assert ours[r]["losses"] == ref[r]["losses"]
        assert all(torch.allclose(a, b, rtol=0, atol=1e-6) for a, b in zip(ours[r]["params"], ref[r]["params"]))
    assert all(torch.equal(a, b) for a, b in zip(ours[0]["params"], ours[1]["params"]))  # replicas stay equal


def test_accelerate_plugin_prepare_trains_like_plain(tmp_path):
    from accelerate import Accelerator

    from hf_ext.tiered_cache.plugin import TieredCachePlugin

    def train(plugin):
        model, _ = tiny_model("opt")
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        acc = Accelerator(cpu=True)
        if plugin is None:
            model, opt = acc.prepare(model, opt)
        else:
            model, opt = plugin.prepare(acc, model, opt)
        g = torch.Generator().manual_seed(3)
        losses = []
        for _ in range(3):
            ids = torch.randint(3, 300, (2, 16), generator=g)
            loss = model(input_ids=ids, labels=ids).loss
            acc.backward(loss)
            losses.append(loss.item())
            opt.step()
            opt.zero_grad()
        if plugin is not None:
            plugin.close()
        return losses, [p.detach().clone() for p in model.parameters()]

    ref = train(None)
    cfg = TieredCacheConfig(device_budget=900_000, device_pool_divisor=1.0, nvme_path=str(tmp_path))
    ours = train(TieredCachePlugin(cfg))
    assert ours[0] == ref[0] and all(torch.equal(a, b) for a, b in zip(ours[1], ref[1]))
    assert not any(tmp_path.iterdir())
