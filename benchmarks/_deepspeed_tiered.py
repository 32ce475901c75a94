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
    args = ap.parse_args()
    import deepspeed
    import torch

    from hf_ext.tiered_cache.bench import opt_model

    deepspeed.init_distributed(dist_backend="gloo")
    model = opt_model(args.shape)  # built normally: deepspeed.zero.Init fails with transformers 5.24
    live = int(args.live_params)
    cfg = {
        "train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1,
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-4}},
        "zero_optimization": {
            "stage": 3,
            "offload_param": {"device": "nvme", "nvme_path": args.nvme_path, "pin_memory": False,
                              "buffer_count": 5, "buffer_size": max(int(1e8), _largest(model))},
            "offload_optimizer": {"device": "nvme", "nvme_path": args.nvme_path, "pin_memory": False},
            "stage3_max_live_parameters": live, "stage3_prefetch_bucket_size": max(live // 4, 1),
            "stage3_param_persistence_threshold": 0,
        },
        "aio": {"block_size": 1048576, "queue_depth": 8, "thread_count": 1, "single_submit": False,
                "overlap_events": True},
    }
    engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=cfg)
    g = torch.Generator().manual_seed(1)
    times, losses = [], []
    for i in range(args.warmup + args.steps):
        ids = torch.randint(3, model.config.vocab_size, (1, args.seqlen), generator=g)
        t0 = time.perf_counter()
        loss = engine(input_ids=ids, labels=ids).loss
        engine.backward(loss)
        engine.step()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
        losses.append(loss.item())
    print(json.dumps({"step_seconds": times, "losses": losses, "deepspeed": deepspeed.__version__}))
    return 0


def _largest(model) -> int:
    return max(p.numel() for p in model.parameters())


if __name__ == "__main__":
    sys.exit(main())
