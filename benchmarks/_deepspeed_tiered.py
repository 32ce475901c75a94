"""DeepSpeed ZeRO-3 with parameters and optimizer states offloaded to NVMe on the same random-weight OPT, batch and
steps as ``benchmarks/tiered_cache.py`` (run by it in ``.venv-deepspeed`` as a subprocess; prints one JSON line).

DeepSpeed 0.19.8 built with ``DS_BUILD_OPS=0`` runs on CPU with ``DS_ACCELERATOR=cpu`` (one process, gloo); its ops
(CPU Adam, async I/O) are JIT-built on first use (minutes, cached afterwards); NVMe needs ``libaio-dev``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("DS_ACCELERATOR", "cpu")
for k, v in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1"),
             ("MASTER_PORT", "29561")):
    os.environ.setdefault(k, v)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", required=True)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--seqlen", type=int, default=128)
    ap.add_argument("--nvme-path", required=True)
    ap.add_argument("--live-params", type=float, required=True, help="stage3_max_live_parameters")
    ap.add_argument("--max-in-cpu", type=int, default=0, help="offload_param.max_in_cpu (DeepSpeed's default 1e9)")
    args = ap.parse_args()
    import deepspeed
    import torch

    from hf_ext.tiered_cache.bench import io_delta, opt_model, proc_io

    deepspeed.init_distributed(dist_backend="gloo")
    model = opt_model(args.shape)  # built normally: deepspeed.zero.Init fails with transformers 5.24
    live = int(args.live_params)
    cfg = {
        "train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1,
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-4}},
        "zero_optimization": {
            "stage": 3,
            # max_in_cpu defaults to 1e9 parameters kept in RAM besides NVMe (every parameter of a model below 1 G,
            # which then never reads a parameter from disk); 0 gives every parameter its home on NVMe, as ours at
            # this placement, and the swap buffers hold the largest tensor, not 1e8 elements each.
            "offload_param": {"device": "nvme", "nvme_path": args.nvme_path, "pin_memory": False,
                              "buffer_count": _buffer_count(model), "buffer_size": _largest(model),
                              "max_in_cpu": args.max_in_cpu},
            "offload_optimizer": {"device": "nvme", "nvme_path": args.nvme_path, "pin_memory": False},
            "stage3_max_live_parameters": live, "stage3_prefetch_bucket_size": max(live // 4, 1),
            "stage3_param_persistence_threshold": 0,
            # optimizer states swapped in sub-groups of the device budget's size (default 1e9: the whole model at once)
            "sub_group_size": max(live, _largest(model)),
        },
        "aio": {"block_size": 1048576, "queue_depth": 8, "thread_count": 1, "single_submit": False,
                "overlap_events": True},
    }
    engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=cfg)
    g = torch.Generator().manual_seed(1)
    times, losses = [], []
    io0 = proc_io() if args.warmup == 0 else None
    for i in range(args.warmup + args.steps):
        ids = torch.randint(3, model.config.vocab_size, (1, args.seqlen), generator=g)
        if i == args.warmup:
            io0 = proc_io()  # disk bytes of the timed steps (its aio threads are in this process)
        t0 = time.perf_counter()
        loss = engine(input_ids=ids, labels=ids).loss
        engine.backward(loss)
        engine.step()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
        losses.append(loss.item())
    end = proc_io()
    io = io_delta(io0, end, args.steps)
    if end is not None:  # the whole run, initialization included (where it wrote its NVMe copies, if it did)
        io.update(disk_read_total=end["read_bytes"], disk_write_total=end["write_bytes"])
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"step_seconds": times, "losses": losses, "deepspeed": deepspeed.__version__,
                      "peak_rss": peak, **io}))
    return 0


def _largest(model) -> int:
    return max(p.numel() for p in model.parameters())


def _buffer_count(model) -> int:
    """Swap buffers (one parameter each): one per swapped parameter. DeepSpeed's default 5, and even enough for
    ``stage3_max_live_parameters`` plus the prefetch bucket, stop with "Not enough buffers 0 for swapping 1" once
    parameters really live on NVMe (DeepSpeed issue #3062). Only tensors of at least 1 MiB are swapped
    (its MIN_AIO_BYTES); the smaller ones stay in RAM."""
    return max(5, sum(p.numel() * p.element_size() >= 1 << 20 for p in model.parameters()))


if __name__ == "__main__":
    sys.exit(main())
