"""Timed training steps with and without the tiered cache, shared by the benchmark, the demo row and
``hf-ext bench tiered-cache``."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field

import torch

from .config import TieredCacheConfig

SHAPES = {  # random-weight OPT shapes (vocabulary cut so the largest tensor's Adam update fits a 25 % budget)
    "tiny": dict(hidden_size=64, ffn_dim=256, num_hidden_layers=2, num_attention_heads=4, vocab_size=512,
                 max_position_embeddings=64),
    # smoke of the DeepSpeed row: its NVMe swapper leaves tensors under 1 MiB in RAM, so these are above it
    "small": dict(hidden_size=512, ffn_dim=2048, num_hidden_layers=2, num_attention_heads=8, vocab_size=2048,
                  max_position_embeddings=64),
    "opt-125m-v8k": dict(hidden_size=768, ffn_dim=3072, num_hidden_layers=12, num_attention_heads=12,
                         vocab_size=8192, max_position_embeddings=2048),
    "opt-350m-v8k": dict(hidden_size=1024, ffn_dim=4096, num_hidden_layers=24, num_attention_heads=16,
                         vocab_size=8192, max_position_embeddings=2048),
    # the real facebook/opt-1.3b and opt-2.7b dimensions (full vocabulary), for the scale benchmark
    "opt-1.3b": dict(hidden_size=2048, ffn_dim=8192, num_hidden_layers=24, num_attention_heads=32, vocab_size=50272,
                     max_position_embeddings=2048),
    "opt-2.7b": dict(hidden_size=2560, ffn_dim=10240, num_hidden_layers=32, num_attention_heads=32,
                     vocab_size=50272, max_position_embeddings=2048),
}


def opt_model(shape: str, seed: int = 0, meta: bool = False) -> torch.nn.Module:
    """A random-weight ``OPTForCausalLM`` of ``shape`` (on the meta device with ``meta``: sizes only, no memory)."""
    from transformers import OPTConfig, OPTForCausalLM

    kw = SHAPES[shape]
    cfg = OPTConfig(**kw, word_embed_proj_dim=kw["hidden_size"], dropout=0.0,
                    attention_dropout=0.0, pad_token_id=1, bos_token_id=2, eos_token_id=2)
    if meta:
        with torch.device("meta"):
            return OPTForCausalLM(cfg)
    torch.manual_seed(seed)
    model = OPTForCausalLM(cfg)
    model.train()
    return model


def training_state_bytes(model: torch.nn.Module) -> int:
    """Parameters + gradients + Adam m and v (fp32)."""
    return 4 * sum(p.numel() * p.element_size() for p in model.parameters())


def device_budget_for(model: torch.nn.Module, fraction: float = 0.25) -> int:
    """``fraction`` of the training state, raised to the smallest working set the pool accepts (tiny shapes)."""
    from .planner import min_device_bytes, size_histogram

    sizes = {f"{i}:{k}": p.numel() * p.element_size() for i in range(4) for k, p in model.named_parameters()}
    return max(int(training_state_bytes(model) * fraction), min_device_bytes(size_histogram(sizes)))


@dataclass
class RunResult:
    step_seconds: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    stats: dict | None = None
    io: dict = field(default_factory=dict)  # disk bytes read / written per timed step (the kernel's counters)

    @property
    def median(self) -> float:
        return statistics.median(self.step_seconds)


def train_steps(model: torch.nn.Module, config: TieredCacheConfig | None, steps: int, warmup: int = 2,
                batch: int = 1, seqlen: int = 128, seed: int = 1) -> RunResult:
    """``warmup`` untimed then ``steps`` timed AdamW steps; with ``config`` under the tiered cache."""
    from .attach import TieredEngine

    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    eng = TieredEngine(config, model, opt) if config is not None else None
    g = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    out = RunResult()
    io0 = None
    try:
        for i in range(warmup + steps):
            ids = torch.randint(3, vocab, (batch, seqlen), generator=g)
            t0 = time.perf_counter()
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
            if i >= warmup:
                out.step_seconds.append(time.perf_counter() - t0)
            out.losses.append(loss.item())
            if i == warmup - 1:
                io0 = proc_io()  # disk bytes of the timed steps only
                if eng is not None:
                    eng.stats = type(eng.stats)(io_mode=eng.stats.io_mode)  # count the timed steps only
        out.io = io_delta(io0, proc_io(), steps)
        if eng is not None:
            s = eng.summary()
            out.stats = {**s.to_dict(), "stall_per_step": s.stall_seconds / max(steps, 1),
                         "planned_reads": len(eng.fetch_plan), "planned_late": eng.planned_late,
                         "nvme_bytes_per_step": (s.bytes["nvme->device"] + s.bytes["device->nvme"]) / max(steps, 1)}
    finally:
        if eng is not None:
            eng.detach()
    return out


def proc_io(pid: int | str = "self") -> dict[str, int] | None:
    """The kernel's block-I/O counters of a process (``/proc/<pid>/io``: ``read_bytes``, ``write_bytes``, all its
    threads; O_DIRECT transfers included); None where the file does not exist (not Linux)."""
    try:
        text = open(f"/proc/{pid}/io").read()
    except OSError:
        return None
    return {k: int(v) for k, v in (ln.split(": ") for ln in text.splitlines() if ": " in ln)}


def io_delta(before: dict | None, after: dict | None, steps: int) -> dict[str, float]:
    """Disk bytes read / written per step between two :func:`proc_io` readings (NaN without counters)."""
    if before is None or after is None:
        return {"disk_read_per_step": float("nan"), "disk_write_per_step": float("nan")}
    n = max(steps, 1)
    return {"disk_read_per_step": (after["read_bytes"] - before["read_bytes"]) / n,
            "disk_write_per_step": (after["write_bytes"] - before["write_bytes"]) / n}


def lower_bound_bytes(param_bytes: int, device_budget: int) -> int:
    """Disk bytes ANY system must move per AdamW step when the device holds ``device_budget`` bytes: the parameters
    and Adam m, v that do not fit (``3 * param_bytes - device_budget``) are read once and written back once
    (gradients can be consumed where they are produced, so they need no disk)."""
    return 2 * max(0, 3 * param_bytes - device_budget)


def disk_bandwidth(path: str, nbytes: int = 256 << 20, threads: int = 1) -> dict:
    """Measured bytes/s of writing, then reading, ``nbytes`` through the NVMe store (O_DIRECT where allowed) with
    ``threads`` transfers in flight (the buffer cut in ``threads`` files): ``{"write", "read", "rw", "threads"}``;
    ``rw`` is the mean over the write and the read (bytes both ways / both times)."""
    from concurrent.futures import ThreadPoolExecutor

    from .pools import ALIGN, SlotPool
    from .storage import NvmeStore

    part = -(-nbytes // threads // ALIGN) * ALIGN
    pool = SlotPool({part: threads})
    pool.buffer.fill_(7)
    store = NvmeStore(path)
    try:
        with ThreadPoolExecutor(threads) as ex:
            t0 = time.perf_counter()
            list(ex.map(lambda i: store.write(f"probe{i}", pool.raw(i), part), range(threads)))
            os.sync()
            t1 = time.perf_counter()
            list(ex.map(lambda i: store.read(f"probe{i}", pool.raw(i), part), range(threads)))
            t2 = time.perf_counter()
        total = part * threads
        return {"write": total / (t1 - t0), "read": total / (t2 - t1), "rw": 2 * total / (t2 - t0),
                "threads": threads}
    finally:
        store.close()


def quick_comparison(shape: str = "tiny", steps: int = 3, nvme_path: str | None = None) -> dict:
    """In-memory floor vs the tiered cache (NVMe tier, device budget 25 % of the training state)."""
    with tempfile.TemporaryDirectory(dir=nvme_path) as d:
        floor = train_steps(opt_model(shape), None, steps, seqlen=32)
        model = opt_model(shape)
        cfg = TieredCacheConfig(device_budget=device_budget_for(model), host_budget=0,
                                nvme_path=d, device_pool_divisor=1.0)
        ours = train_steps(model, cfg, steps, seqlen=32)
    return {"floor": floor, "ours": ours}
