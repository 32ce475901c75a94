"""Compression from disk (``hf-ext compress --low-memory``) against the in-memory path.

Part 1, the default model (Gemma 3 270M, float32, 1.0 GB of weights): the same settings through the in-memory CLI
(``from_pretrained(..., quantization_config=...)`` + ``save_pretrained``) and through ``--low-memory``; peak RSS of
each process, wall time, and whether the two output folders hold the same tensors bit for bit.

Part 2, a model larger than the memory it gets: a random-weight OPT-shaped checkpoint (``--hidden``, ``--layers``;
by default 0.7 B parameters, 2.8 GB in float32) is written to disk block by block, then both paths run in a cgroup
whose memory limit (``--limit-mib``) is below the checkpoint's size. Random weights make perplexity meaningless; the
point is the memory. Needs root and a cgroup-v1 memory controller (else the part runs without a limit and says so).

    .venv/bin/python benchmarks/compression_disk.py
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from _report import CGROUP_ROOT, table, write_section  # noqa: E402
from _report import run_measured as run


def compress_cmd(model: str, out: Path, args, low_memory: bool) -> list[str]:
    cmd = [sys.executable, "-m", "hf_ext.cli", "compress", model, "--out", str(out), "--sparsity", str(args.sparsity),
           "--allocation", "uniform", "--metric", args.metric, "--calibration", args.calibration,
           "--n-samples", str(args.n_samples), "--seqlen", str(args.seqlen)]
    return cmd + (["--low-memory"] if low_memory else [])


def same_tensors(a: Path, b: Path) -> tuple[bool, int]:
    import torch

    from hf_ext.common.offload import SafetensorsCheckpoint

    ca, cb = SafetensorsCheckpoint(a), SafetensorsCheckpoint(b)
    if set(ca.weight_map) != set(cb.weight_map):
        return False, 0
    return all(torch.equal(ca.load([k])[k], cb.load([k])[k]) for k in ca.weight_map), len(ca.weight_map)


def folder_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def write_random_opt(folder: Path, hidden: int, layers: int, vocab: int) -> float:
    """A random OPT checkpoint written block by block (never whole in memory); returns its size in MiB."""
    import torch
    from accelerate import init_empty_weights
    from transformers import OPTConfig, OPTForCausalLM

    from hf_ext.common.models import tiny_tokenizer
    from hf_ext.common.offload import ShardWriter

    config = OPTConfig(hidden_size=hidden, num_hidden_layers=layers, ffn_dim=4 * hidden, num_attention_heads=hidden
                       // 64, word_embed_proj_dim=hidden, vocab_size=vocab, max_position_embeddings=2048,
                       dtype="float32")
    with init_empty_weights():
        meta = OPTForCausalLM(config)
    names = [n for n in meta.state_dict() if n != "lm_head.weight"]  # tied to the embeddings
    gen = torch.Generator().manual_seed(0)

    def tensor(name: str) -> torch.Tensor:
        shape = meta.state_dict()[name].shape
        if "layer_norm" in name:
            return torch.ones(shape) if name.endswith("weight") else torch.zeros(shape)
        if name.endswith("bias"):
            return torch.zeros(shape)
        return torch.randn(shape, generator=gen) * 0.02

    folder.mkdir(parents=True)
    writer = ShardWriter(folder, layers + 1)
    outside = [n for n in names if ".layers." not in n]
    writer.write({n: tensor(n) for n in outside})
    for i in range(layers):
        writer.write({n: tensor(n) for n in names if f".layers.{i}." in n})
    writer.finish()
    config.save_pretrained(folder)
    # calibration only needs token ids below the vocabulary size; the default model's tokenizer (262k ids) would
    # need a 262k-row embedding, so a small BPE one is used (OPT's real vocabulary size is kept)
    tiny_tokenizer().save_pretrained(folder)
    return folder_mib(folder)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sparsity", type=float, default=0.5)
    p.add_argument("--metric", default="wanda")
    p.add_argument("--calibration", default="pydocs")
    p.add_argument("--n-samples", type=int, default=16)
    p.add_argument("--seqlen", type=int, default=256)
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--limit-mib", type=int, default=2048)
    p.add_argument("--skip-real", action="store_true")
    p.add_argument("--skip-synthetic", action="store_true")
    p.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one, removed)")
    args = p.parse_args()
    from hf_ext.common.models import default_model_path

    work = Path(args.workdir or tempfile.mkdtemp(prefix="hf_ext_disk_"))
    work.mkdir(parents=True, exist_ok=True)
    sections = [f"Settings: uniform {args.metric} {args.sparsity:.0%}, calibration {args.calibration} "
                f"{args.n_samples} x {args.seqlen} tokens, through the CLI (`hf-ext compress ...` with and without "
                "`--low-memory`), each in its own process; peak RSS from wait4 (includes Python, torch and "
                "transformers, about 0.4 GiB before any weight loads)."]
    try:
        if not args.skip_real:
            src = str(default_model_path())
            rows = []
            res = {}
            for mode, low in (("in memory (from_pretrained + save_pretrained)", False), ("--low-memory", True)):
                out = work / ("real_low" if low else "real_mem")
                res[low] = run(compress_cmd("default", out, args, low))
                r = res[low]
                rows.append([mode, "ok" if r["code"] == 0 else f"exit {r['code']}", f"{r['seconds']:.0f}",
                             f"{r['peak_mib']:.0f}", f"{folder_mib(out):.0f}" if out.exists() else "-"])
            same, n = same_tensors(work / "real_mem", work / "real_low") if all(
                r["code"] == 0 for r in res.values()) else (False, 0)
            ratio = res[False]["peak_mib"] / res[True]["peak_mib"]
            sections.append(
                f"### Gemma 3 270M (float32 weights: {folder_mib(Path(src)):.0f} MiB on disk)\n\n"
                + table(["path", "status", "wall s", "peak RSS MiB", "output MiB"], rows)
                + f"\n\nPeak RSS in memory / from disk: **{ratio:.2f}x**. The two output folders hold "
                f"{'the same' if same else 'DIFFERENT'} {n} tensors "
                f"{'bit for bit' if same else ''}. On this model the 0.67 GB embedding (kept in memory for the "
                "calibration forward) is two thirds of the weights, so streaming the 18 blocks saves less than on "
                "deeper models.")
        if not args.skip_synthetic:
            src = work / "opt_random"
            if not (src / "config.json").exists():
                t = time.perf_counter()
                size = write_random_opt(src, args.hidden, args.layers, 50272)
                print(f"wrote {size:.0f} MiB in {time.perf_counter() - t:.0f} s", flush=True)
            size = folder_mib(src)
            limited = CGROUP_ROOT.is_dir() and os.access(CGROUP_ROOT, os.W_OK)
            limit = args.limit_mib if limited else None
            rows = []
            for mode, low in (("in memory (from_pretrained + save_pretrained)", False), ("--low-memory", True)):
                out = work / ("syn_low" if low else "syn_mem")
                r = run(compress_cmd(str(src), out, args, low), limit)
                killed = "killed by the cgroup's OOM killer" if r["oom"] else f"exit {r['code']}"
                status = "ok" if r["code"] == 0 else killed
                rows.append([mode, status, f"{r['seconds']:.0f}", f"{r['peak_mib']:.0f}",
                             f"{folder_mib(out):.0f}" if out.exists() else "-"])
            limit_note = (f"in a memory cgroup limited to **{args.limit_mib} MiB** (swap included)" if limited else
                          "WITHOUT a memory limit (no writable cgroup-v1 memory controller here)")
            sections.append(
                f"### A model larger than its memory: random OPT, hidden {args.hidden}, {args.layers} layers, "
                f"float32 ({size:.0f} MiB on disk)\n\nBoth paths {limit_note}:\n\n"
                + table(["path", "status", "wall s", "peak RSS MiB", "output MiB"], rows)
                + "\n\nPeak RSS counts the pages of the memory-mapped checkpoint a process has touched; the cgroup "
                "can reclaim those (they are clean file pages), so a process can show a peak above the limit.")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    body = "\n\n".join(sections)
    print(body)
    print(write_section("compression_disk", "Compression from disk, one block in memory "
                        "(benchmarks/compression_disk.py)", body))


if __name__ == "__main__":
    main()
