"""Scale part of ``benchmarks/tiered_cache.py`` (``--part scale``): the largest OPT shape that fine-tunes on this
machine with the NVMe tier (OPT-2.7B dimensions, random weights) next to the largest that fits in memory without it
(OPT-1.3B dimensions). Each run is its own subprocess (this file with ``--child``), so its peak RSS is its own.

Sizes: OPT-2.7B has 2.65 G parameters, so its fp32 training state (params + grads + Adam m, v) is 39.5 GiB; with a
device budget of 15 % (5.9 GiB) every tensor has a home on the NVMe tier and each step moves about
2 x (3 x 9.9 - 5.9) GiB = 47 GiB through the disk: about 60 s/step at 800 MiB/s, plus the profiling step (which
also spills the gradients) and the writes at adoption. OPT-1.3B in memory: 19.6 GiB of state, compute only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _report import run_measured, table  # noqa: E402

NVME_FRACTION = 0.15  # device budget of the NVMe run, as a share of its training state (our choice)


def _mem_available() -> int:
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def child(args) -> int:
    """One run: train ``--steps`` timed steps after the profiling step; JSON to ``--out``."""
    import torch

    from hf_ext.tiered_cache.attach import TieredEngine
    from hf_ext.tiered_cache.bench import io_delta, opt_model, proc_io
    from hf_ext.tiered_cache.config import TieredCacheConfig

    torch.set_num_threads(max(1, torch.get_num_threads()))
    t_build = time.perf_counter()
    model = opt_model(args.shape)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    eng = None
    if args.budget:
        cfg = TieredCacheConfig(device_budget=args.budget, host_budget=0, nvme_path=args.nvme_path,
                                device_pool_divisor=1.0)
        eng = TieredEngine(cfg, model, opt)
    build = time.perf_counter() - t_build
    g = torch.Generator().manual_seed(1)
    out = {"shape": args.shape, "build_seconds": build, "step_seconds": [], "losses": []}
    try:
        io0 = None
        for i in range(1 + args.steps):
            if i == 1:
                io0 = proc_io()
                if eng is not None:
                    eng.stats = type(eng.stats)(io_mode=eng.stats.io_mode)
            ids = torch.randint(3, model.config.vocab_size, (1, args.seqlen), generator=g)
            t0 = time.perf_counter()
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
            dt = time.perf_counter() - t0
            if i:
                out["step_seconds"].append(dt)
            else:
                out["first_step_seconds"] = dt  # the profiling step (and the Adam states' creation)
            out["losses"].append(loss.item())
            print(f"{args.shape} step {i}: {dt:.1f} s", flush=True)
        out.update(io_delta(io0, proc_io(), args.steps))
        if eng is not None:
            s = eng.summary()
            out["device_hit_rate"] = s.device_hit_rate
            out["nvme_bytes_on_disk"] = sum(e.stat().st_blocks * 512 for e in os.scandir(eng.nvme.root)
                                            if e.is_file())
            out["device_budget"] = args.budget
    finally:
        if eng is not None:
            eng.detach()
    Path(args.out).write_text(json.dumps(out))
    return 0


def scale(args, here: Path) -> str:
    """The scale part; returns its markdown body (raises SystemExit when the disk is too small)."""
    from hf_ext.tiered_cache.bench import device_budget_for, opt_model, training_state_bytes

    nvme_shape, mem_shape = ("tiny", "tiny") if args.smoke else ("opt-2.7b", "opt-1.3b")
    seqlen, steps = (32, 1) if args.smoke else (128, args.scale_steps)
    nvme_root = Path(args.nvme_path or here / "out" / "nvme")
    nvme_root.mkdir(parents=True, exist_ok=True)
    big, small = opt_model(nvme_shape, meta=True), opt_model(mem_shape, meta=True)
    big_state, small_state = training_state_bytes(big), training_state_bytes(small)
    budget = device_budget_for(big, NVME_FRACTION)
    need = int(big_state * 1.02) + (1 << 30) * (not args.smoke)  # every tensor's NVMe home, headers, slack
    free = shutil.disk_usage(nvme_root).free
    if free < need:
        raise SystemExit(f"--part scale: {nvme_root} has {free / 2**30:.1f} GiB free, the {nvme_shape} run needs "
                         f"{need / 2**30:.1f} GiB on its NVMe tier; free space or pass --nvme-path.")
    ram = _mem_available()
    print(f"scale: {nvme_shape} state {big_state / 2**30:.1f} GiB (device budget {budget / 2**30:.1f} GiB, NVMe "
          f"{need / 2**30:.1f} GiB of {free / 2**30:.0f} GiB free); {mem_shape} in memory {small_state / 2**30:.1f} "
          f"GiB; RAM available {ram / 2**30:.1f} GiB", flush=True)
    runs = {}
    for label, shape, b in (("with the NVMe tier", nvme_shape, budget), ("in memory", mem_shape, 0)):
        with tempfile.TemporaryDirectory(dir=nvme_root) as d:
            res_path = Path(d) / "result.json"
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--shape", shape, "--steps", str(steps),
                   "--seqlen", str(seqlen), "--nvme-path", d, "--budget", str(b), "--out", str(res_path)]
            m = run_measured(cmd, cwd=str(here.parent))
            res = json.loads(res_path.read_text()) if res_path.exists() else {"error": m["tail"][-300:]}
        runs[label] = (shape, m, res)
    rows = []
    for label, (shape, m, res) in runs.items():
        tiered = label.startswith("with")
        state = big_state if tiered else small_state
        n = sum(p.numel() for p in (big if tiered else small).parameters())
        if "error" in res or m["code"] != 0:
            why = "killed (out of memory)" if m["code"] == -9 else f"exit {m['code']}"
            rows.append([label, shape, f"{n / 1e9:.2f}", f"{state / 2**30:.1f}", why, "-",
                         f"{m['peak_mib'] / 1024:.1f}", "-", "-"])
            continue
        med = sorted(res["step_seconds"])[len(res["step_seconds"]) // 2]
        disk = res["disk_read_per_step"] + res["disk_write_per_step"]
        rows.append([label, shape, f"{n / 1e9:.2f}", f"{state / 2**30:.1f}", med, res["first_step_seconds"],
                     f"{m['peak_mib'] / 1024:.1f}", f"{res.get('nvme_bytes_on_disk', 0) / 2**30:.1f}",
                     f"{disk / 2**30:.1f}"])
    big_res = runs["with the NVMe tier"][2]
    small_res = runs["in memory"][2]
    ok_big, ok_small = "error" not in big_res, "error" not in small_res
    findings = (f"Findings (computed): {nvme_shape} ({big_state / 2**30:.1f} GiB of training state, "
                f"{big_state / max(ram, 1):.1f}x the RAM available at the start) "
                + (f"fine-tunes with the NVMe tier in {runs['with the NVMe tier'][1]['peak_mib'] / 1024:.1f} GiB peak "
                   f"RSS (device hit rate {big_res['device_hit_rate']:.1%})" if ok_big else "did NOT complete")
                + f"; {mem_shape} in memory ({small_state / 2**30:.1f} GiB) "
                + (f"peaks at {runs['in memory'][1]['peak_mib'] / 1024:.1f} GiB RSS" if ok_small
                   else "did NOT complete")
                + f"; {nvme_shape} in memory would need at least {big_state / 2**30:.1f} GiB.")
    return ("### Scale\n\nRandom-weight OPT shapes with the real OPT dimensions, AdamW fp32, batch 1 x "
            f"{seqlen}, one profiling step then {steps} timed step(s); each run in its own subprocess (peak RSS of "
            "the whole child from wait4: build, steps and giving the weights back). NVMe run: device budget "
            f"{budget / 2**30:.2f} GiB ({NVME_FRACTION:.0%} of its state), host tier 0, the rest in `{nvme_root}`; "
            "its parameters are given back at the end, its optimizer states dropped when they do not fit in RAM."
            "\n\n"
            + table(["run", "shape", "params (G)", "training state GiB", "s/step (median)", "first step s",
                     "peak RSS GiB", "NVMe GiB on disk", "disk GiB moved/step"], rows)
            + "\n\n" + findings + "\n")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--shape", required=True)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--seqlen", type=int, default=128)
    ap.add_argument("--nvme-path", required=True)
    ap.add_argument("--budget", type=int, default=0, help="device budget bytes; 0 = in memory, no tiering")
    ap.add_argument("--out", required=True)
    sys.exit(child(ap.parse_args()))
