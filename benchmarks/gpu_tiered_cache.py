"""GPU check of the tiered cache (prepared for a lent GPU; ``--device cpu`` is the dry run done here):
OPT-1.3B shape with random weights, device budget below its training state, rest in pinned host memory:
ours (Belady + prefetch, copies on a side CUDA stream) vs ours with LRU and no prefetch, and accelerate's
``cpu_offload`` forward vs ours forward. Reports step time and device hit rate.

    python benchmarks/gpu_tiered_cache.py                  # on the GPU machine, one run (~5 min)
    python benchmarks/gpu_tiered_cache.py --device cpu     # dry run on tiny shapes
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import table, write_section  # noqa: E402

from hf_ext.tiered_cache.bench import SHAPES, training_state_bytes  # noqa: E402
from hf_ext.tiered_cache.config import TieredCacheConfig  # noqa: E402

SHAPES.setdefault("opt-1.3b", dict(hidden_size=2048, ffn_dim=8192, num_hidden_layers=24, num_attention_heads=32,
                                   vocab_size=50272, max_position_embeddings=2048))


def build(shape: str, device: str):
    from hf_ext.tiered_cache.bench import opt_model

    return opt_model(shape).to(device)


def step_times(model, cfg, steps, seqlen, device, dtype):
    from hf_ext.tiered_cache.attach import TieredEngine

    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    eng = TieredEngine(cfg, model, opt) if cfg else None
    out = []
    try:
        for i in range(steps + 2):
            ids = torch.randint(3, model.config.vocab_size, (1, seqlen), device=device)
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            with torch.autocast(device, dtype=dtype, enabled=device == "cuda"):
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
            if device == "cuda":
                torch.cuda.synchronize()
            if i >= 2:
                out.append(time.perf_counter() - t0)
        stats = eng.summary().to_dict() if eng else {}
    finally:
        if eng:
            eng.detach()
    return out, stats


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()
    dry = args.device == "cpu"
    shape, seqlen = ("tiny", 32) if dry else ("opt-1.3b", 512)
    dtype = torch.bfloat16
    probe = build(shape, "cpu")
    state = training_state_bytes(probe)
    del probe
    budget = state // 2 if dry else int(state * 0.4)
    rows = []
    for name, kw in (("ours: Belady + prefetch", dict(eviction="belady", prefetch=True)),
                     ("ours: LRU, no prefetch", dict(eviction="lru", prefetch=False))):
        model = build(shape, args.device)
        cfg = TieredCacheConfig(device_budget=budget, device_pool_divisor=1.0, **kw)
        times, st = step_times(model, cfg, args.steps, seqlen, args.device, dtype)
        rows.append([name, statistics.median(times), f"{st['device_hit_rate']:.1%}"])
        del model
        print(rows[-1], flush=True)
    from accelerate import cpu_offload

    model = build(shape, "cpu").eval()
    cpu_offload(model, execution_device=torch.device(args.device))
    ids = torch.randint(3, model.config.vocab_size, (1, seqlen), device=args.device)
    with torch.no_grad():
        model(input_ids=ids)
        t0 = time.perf_counter()
        model(input_ids=ids)
        if args.device == "cuda":
            torch.cuda.synchronize()
    rows.append(["accelerate cpu_offload (forward only)", time.perf_counter() - t0, "-"])
    body = (f"OPT shape `{shape}`, random weights, {'bf16 autocast, ' if not dry else ''}training state "
            f"{state / 2**30:.2f} GiB, device budget {budget / 2**30:.2f} GiB, rest in host memory.\n\n"
            + table(["variant", "s/step (median)", "device hit rate"], rows))
    print(body)
    if not dry:
        write_section("gpu_tiered_cache", "Tiered cache on a GPU", body, packages=("accelerate",))
    return 0


if __name__ == "__main__":
    sys.exit(main())
