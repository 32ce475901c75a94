"""Compression benchmark: allocation x metric x sparsity (+ low-bit) on the default model, against llm-compressor.

Runs in one process that loads Gemma 3 270M once; each setting compresses a fresh copy of the dense model with
``hf_ext.compress`` (calibration: ``pydocs`` calibration split, N x L tokens, seed 0) and measures THE perplexity
(``pydocs`` eval split, 512-token windows with BOS, ``--max-tokens`` predicted tokens). Settings run in priority
order (70 % first) until ``--budget-min`` is spent; the table says what ran. Then, unless ``--no-llmc``,
``benchmarks/llmc_baseline.py`` runs llm-compressor's ``oneshot`` in its own venv on the same calibration windows
and evaluation (or ``--llmc-json`` reuses its JSON output), and a CLI run in a subprocess measures the checkpoint
size and the peak RSS of compressing through ``from_pretrained``.

    .venv/bin/python benchmarks/compression.py                       # defaults: 16 x 256 calibration, 4088 tokens
    .venv/bin/python benchmarks/compression.py --budget-min 40 --sparsities 0.5 0.6 0.7
"""

from __future__ import annotations

import argparse
import copy
import json
import shlex
import subprocess
import sys
import tempfile
import time
import types
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import cpu_name, run_measured  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def grid(sparsities: list[float]) -> list[dict]:
    """Settings in priority order: the 70 % comparisons first, then quantization, Hessian, then lower sparsities."""
    top = max(sparsities)
    combos = [(a, m) for a in ("uniform", "owl", "mrp") for m in ("wanda", "sparsegpt")]
    out = [dict(sparsity=top, allocation=a, metric=m) for a, m in combos]
    out += [dict(sparsity=top, allocation="mrp", metric="sparsegpt", bits=4),
            dict(sparsity=top, allocation="mrp", metric="sparsegpt", bits=3),
            dict(sparsity=top, allocation="hessian", metric="sparsegpt"),
            dict(sparsity=top, allocation="uniform", metric="sparsegpt", bits=4),
            dict(sparsity=top, allocation="uniform", metric="sparsegpt", bits=3)]
    for s in sorted((x for x in sparsities if x != top), reverse=True):
        out += [dict(sparsity=s, allocation=a, metric=m) for a, m in combos]
    return out


def label(s: dict) -> str:
    bits = f" + {s['bits']}-bit" if s.get("bits") else ""
    return f"{s['allocation']} {s['metric']} {s['sparsity']:.0%}{bits}"


def cache_key(s: dict, args) -> str:
    return f"{label(s)}|{args.n_samples}x{args.seqlen}|{args.max_tokens}|g{args.group_size}"


def run_ours(model, tok, settings: list[dict], args) -> list[dict]:
    from hf_ext.common.data import calibration_batches
    from hf_ext.common.perplexity import perplexity
    from hf_ext.common.utils import atomic_write_json
    from hf_ext.compression import CompressionConfig, compress
    from hf_ext.compression.pipeline import allocation_from_stats, collect_allocation_stats

    rows, start = [], time.perf_counter()
    stats = None
    cache_path = Path(args.cache) if args.cache else None
    cache = json.loads(cache_path.read_text()) if cache_path and cache_path.is_file() else {}
    for s in settings:
        key = cache_key(s, args)
        if key in cache:
            rows.append(cache[key])
            continue
        late = args.stop_at and datetime.now(timezone.utc).strftime("%H:%M") >= args.stop_at
        if late or (time.perf_counter() - start) / 60 > args.budget_min:
            print(f"[compression] budget spent, skipping {label(s)}", file=sys.stderr)
            rows.append({**s, "skipped": True})
            continue
        cfg = CompressionConfig(**s, calibration="pydocs", n_samples=args.n_samples, seqlen=args.seqlen, seed=0,
                                group_size=args.group_size)
        notes = []
        if s["allocation"] != "uniform":
            if stats is None:  # one dense statistics pass serves every OWL / MRP / Hessian setting
                ids = calibration_batches(tok, "pydocs", args.n_samples, args.seqlen, seed=0)
                todo = [x for x in settings if cache_key(x, args) not in cache]
                stats = collect_allocation_stats(
                    model, ids, cfg, owl=any(x["allocation"] == "owl" for x in todo),
                    mrp_metrics=tuple(sorted({x["metric"] for x in todo if x["allocation"] == "mrp"})),
                    hessian_sparsities=tuple(sorted({x["sparsity"] for x in todo if x["allocation"] == "hessian"})),
                )
                print(f"[compression] allocation statistics pass: {stats.seconds:.1f} s", file=sys.stderr)
            t0 = time.perf_counter()
            cfg.block_sparsities, notes = allocation_from_stats(stats, cfg)
            notes.append(f"allocation computed in {time.perf_counter() - t0:.1f} s from the shared statistics pass "
                         f"({stats.seconds:.0f} s, not included in wall s)")
        t0, c0 = time.perf_counter(), time.process_time()
        m = compress(copy.deepcopy(model), tok, cfg)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        ppl = perplexity(m, tok, "pydocs", seqlen=512, max_tokens=args.max_tokens, progress=False)
        q = m.config.quantization_config
        row = {**s, "ppl": ppl.perplexity, "seconds": seconds, "cpu_seconds": cpu, "achieved": q.achieved_sparsity,
               "blocks": q.block_sparsities, "protocol": ppl.protocol, "notes": notes}
        if s.get("bits") == 4 and not any("size" in r for r in rows):
            from hf_ext.common.models import resolve_model_path

            with tempfile.TemporaryDirectory() as d:
                m.save_pretrained(d)
                row["size"] = checkpoint_sizes(Path(d), Path(resolve_model_path(args.model)))
        rows.append(row)
        if cache_path:  # re-read first: several benchmark processes may share one cache file
            cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
            cache[key] = row
            atomic_write_json(cache_path, cache)
        print(f"[compression] {label(s)}: ppl {ppl.perplexity:.3f}, {seconds:.1f} s, "
              f"sparsity {q.achieved_sparsity:.4f}", file=sys.stderr, flush=True)
        del m
    return rows


def run_llmc(args, tmp: Path) -> tuple[list[dict], str]:
    if args.llmc_json:
        return json.loads(Path(args.llmc_json).read_text()), args.llmc_note or f"reused {args.llmc_json}"
    script = REPO / "benchmarks" / "llmc_baseline.py"
    if not script.is_file():
        return [], "benchmarks/llmc_baseline.py not present"
    out = tmp / "llmc.json"
    cmd = [sys.executable, str(script), "--grid", args.llmc_grid, "--n-samples", str(args.n_samples), "--seqlen",
           str(args.seqlen), "--max-tokens", str(args.max_tokens), "--json", str(out)]
    print("[compression] $ " + " ".join(cmd), file=sys.stderr, flush=True)
    res = subprocess.run(cmd, cwd=REPO, timeout=args.llmc_timeout_min * 60)
    if not out.is_file():
        return [], f"llmc_baseline.py exited {res.returncode} without results"
    return json.loads(out.read_text()), " ".join(["benchmarks/llmc_baseline.py", *cmd[2:-2]])


def checkpoint_sizes(folder: Path, dense_folder: Path) -> dict:
    """Bytes of a compressed checkpoint: packed linears vs their dense fp16 size, whole file with the rest in fp16."""
    from safetensors import safe_open

    packed_suffixes = (".mask", ".qweight", ".scales", ".zeros")
    packed = rest = 0
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        for k in f.keys():
            t = f.get_slice(k)
            n = 1
            for d in t.get_shape():
                n *= d
            size = n * {"F32": 4, "F16": 2, "BF16": 2, "U8": 1, "I16": 2, "I32": 4}[t.get_dtype()]
            if k.endswith(packed_suffixes):
                packed += size
            else:
                rest += n  # parameters kept dense (embeddings, norms, biases)
    layers = json.loads((folder / "config.json").read_text())["quantization_config"]["compressed_layers"]
    linear_numel = 0
    with safe_open(str(dense_folder / "model.safetensors"), "pt") as f:
        for k in f.keys():
            if k.endswith(".weight") and k[: -len(".weight")] in layers:
                rows, cols = f.get_slice(k).get_shape()
                linear_numel += rows * cols
    return {
        "file_bytes": (folder / "model.safetensors").stat().st_size,
        "dense_file_bytes": (dense_folder / "model.safetensors").stat().st_size,
        "packed_linear_bytes": packed, "dense_linear_fp16_bytes": 2 * linear_numel,
        "fp16_equiv_bytes": packed + 2 * rest, "dense_fp16_bytes": 2 * (linear_numel + rest),
    }


def run_cli_size(args, tmp: Path) -> dict:
    """Compress through the CLI (from_pretrained path) in a subprocess: checkpoint size and peak RSS."""
    from hf_ext.common.models import resolve_model_path

    out = tmp / "ckpt"
    cmd = [sys.executable, "-m", "hf_ext.cli", "compress", args.model, "--sparsity", "0.7", "--allocation", "mrp",
           "--metric", "sparsegpt", "--bits", "4", "--group-size", str(args.group_size), "--n-samples",
           str(args.n_samples), "--seqlen", str(args.seqlen), "--out", str(out)]
    res = run_measured(cmd, cwd=REPO)
    if res["code"] != 0:
        raise RuntimeError(f"hf-ext compress exited {res['code']}: {res['tail']}")
    return {**checkpoint_sizes(out, Path(resolve_model_path(args.model))), "seconds": res["seconds"],
            "peak_rss_mib": res["peak_mib"], "command": "hf-ext " + " ".join(cmd[3:-2]) + " --out DIR"}


def llmc_label(r: dict) -> str:
    out = f"{r['method']} {r['sparsity']:.0%}" if r.get("sparsity") is not None else r["method"]
    if r.get("bits"):
        out += f" W{r['bits']}"
    return out + ("" if r.get("profile", "uniform") == "uniform" else f" ({r['profile']})")


def side_by_side(rows: list[dict], llmc: list[dict]) -> list[tuple[dict, dict]]:
    """hf-ext rows paired with the llm-compressor run of the same metric, sparsity and allocation (no bits)."""
    theirs = {(r["method"], round(r["sparsity"], 3), r.get("profile", "uniform")): r for r in llmc
              if r.get("ppl") and not r.get("bits") and r.get("sparsity") is not None}
    out = []
    for r in rows:
        key = (r["metric"], round(r["sparsity"], 3), r["allocation"])
        if not r.get("skipped") and not r.get("bits") and key in theirs:
            out.append((r, theirs[key]))
    return out


def report(dense, rows, llmc, llmc_note, size, args, command: str) -> str:
    lines = [
        "# Compression: MRP / OWL / uniform allocation, Wanda / SparseGPT, sparse + low-bit (Gemma 3 270M)",
        "",
        f"Command: `{command}`  ",
        f"Machine: {cpu_name()} ({torch.get_num_threads()} threads), torch {torch.__version__}; "
        f"date {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. The CPU was shared with other jobs: wall times are "
        "indicative only (CPU seconds given beside them).  ",
        f"Calibration: pydocs calibration split, {args.n_samples} x {args.seqlen} tokens, seed 0 (the same windows "
        f"for hf-ext and llm-compressor). Evaluation: {dense.protocol}.  ",
        "Sparsity is counted on hf-ext's pruning masks over the decoder linears (the dense model already holds "
        "4.55 % exact zeros from its Q4_K_M origin; they are not counted).",
        "",
        f"Dense perplexity: **{dense.perplexity:.3f}**",
        "",
        "| setting | perplexity | achieved sparsity | wall s | CPU s | block sparsities (min / max) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.get("skipped"):
            lines.append(f"| {label(r)} | not run (budget) | | | | |")
            continue
        lines.append(f"| {label(r)} | {r['ppl']:.3f} | {r['achieved']:.4f} | {r['seconds']:.1f} | "
                     f"{r['cpu_seconds']:.0f} | {min(r['blocks']):.3f} / {max(r['blocks']):.3f} |")
    lines += ["", "## llm-compressor 0.14.0.1 (`oneshot`, own venv)", "", f"Runs: {llmc_note}.", ""]
    pairs = side_by_side(rows, llmc)
    if pairs:
        lines += ["Side by side (same calibration windows, same evaluation; ratio = hf-ext / llm-compressor "
                  "perplexity, below 1 means hf-ext is better):", "",
                  "| setting | hf-ext | llm-compressor | ratio | hf-ext CPU s | llm-compressor CPU s |",
                  "|---|---|---|---|---|---|"]
        their_dense = next((r for r in llmc if r.get("method") == "dense" and r.get("ppl")), None)
        if their_dense:
            lines.append(f"| dense (no compression) | {dense.perplexity:.3f} | {their_dense['ppl']:.3f} | "
                         f"{dense.perplexity / their_dense['ppl']:.3f} | - | - |")
        for ours, theirs in pairs:
            lines.append(f"| {label(ours)} | {ours['ppl']:.3f} | {theirs['ppl']:.3f} | "
                         f"{ours['ppl'] / theirs['ppl']:.3f} | {ours['cpu_seconds']:.0f} | "
                         f"{theirs.get('cpu_seconds', 0):.0f} |")
        lines += ["", "All llm-compressor runs:", ""]
    if llmc:
        lines += ["| setting | perplexity | oneshot wall s | zero fraction | error |", "|---|---|---|---|---|"]
        for r in llmc:
            ppl = f"{r['ppl']:.3f}" if r.get("ppl") else "-"
            zf = f"{r['zero_fraction']:.4f}" if r.get("zero_fraction") is not None else "-"
            lines.append(f"| {llmc_label(r)} | {ppl} | {r.get('seconds', 0):.1f} | {zf} | {r.get('error') or ''} |")
    size = size or next((dict(r["size"], command=f"in-process: {label(r)}") for r in rows if r.get("size")), None)
    if size:
        run = (f"{size['seconds']:.0f} s, peak RSS {size['peak_rss_mib']:.0f} MiB" if "peak_rss_mib" in size
               else "saved from the benchmark's own run (no separate CLI run for peak RSS)")
        lines += [
            "", "## Checkpoint size and memory (70 % + 4-bit)", "",
            f"`{size['command']}`: {run}.  ",
            f"Compressed linears: {size['packed_linear_bytes'] / 2**20:.1f} MiB packed vs "
            f"{size['dense_linear_fp16_bytes'] / 2**20:.1f} MiB dense fp16 "
            f"({size['dense_linear_fp16_bytes'] / size['packed_linear_bytes']:.1f}x smaller).  ",
            f"Whole checkpoint with the rest in fp16: {size['fp16_equiv_bytes'] / 2**20:.0f} MiB vs dense fp16 "
            f"{size['dense_fp16_bytes'] / 2**20:.0f} MiB ({size['fp16_equiv_bytes'] / size['dense_fp16_bytes']:.2f}x; "
            "the 170 M-parameter embedding dominates this model). As saved (rest in fp32): "
            f"{size['file_bytes'] / 2**20:.0f} MiB vs the dense fp32 checkpoint "
            f"{size['dense_file_bytes'] / 2**20:.0f} MiB.",
        ]
    notes = [r for r in rows if not r.get("skipped") and r["allocation"] in ("mrp", "owl", "hessian")]
    if notes:
        lines += ["", "## Allocation details", ""]
        lines += [f"- {label(r)}: blocks " + ", ".join(f"{b:.3f}" for b in r["blocks"]) + "; " + " ".join(r["notes"])
                  for r in notes if r["sparsity"] == max(x["sparsity"] for x in notes)]
    lines += ["", "Plot: `benchmarks/results/compression_allocation.png` (per-block sparsity at the highest sparsity)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default", help="model folder ('default': Gemma 3 270M)")
    p.add_argument("--group-size", type=int, default=128)
    p.add_argument("--n-samples", type=int, default=16)
    p.add_argument("--seqlen", type=int, default=256)
    p.add_argument("--max-tokens", type=int, default=4088)
    p.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.6, 0.7])
    p.add_argument("--budget-min", type=float, default=30.0, help="stop starting new hf-ext settings after this")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--stop-at", default=None, help="UTC HH:MM after which no new setting starts")
    p.add_argument("--cache", default=None, help="JSON file of finished settings: reused, and extended as runs end")
    p.add_argument("--only", nargs="*", default=None, help="run only settings whose label contains one of these")
    p.add_argument("--report-only", action="store_true", help="write the report from --cache without running")
    p.add_argument("--no-llmc", action="store_true")
    p.add_argument("--llmc-json", default=None, help="reuse results of llmc_baseline.py --json instead of running")
    # dense first: the same model under llm-compressor's pinned transformers separates a version effect from a method
    p.add_argument("--llmc-grid", default="dense,sparsegpt:0.7,wanda:0.7,sparsegpt:0.7:owl,wanda:0.7:owl,"
                                          "sparsegpt:0.5,wanda:0.5")
    p.add_argument("--llmc-note", default=None, help="how the reused --llmc-json was produced (printed in the report)")
    p.add_argument("--llmc-timeout-min", type=float, default=20.0)
    p.add_argument("--no-size", action="store_true", help="skip the CLI checkpoint-size / RSS run")
    p.add_argument("--size-json", default=None, help="use this result of a separate CLI size / RSS run")
    p.add_argument("--out", default=str(RESULTS / "compression.md"))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    command = "python benchmarks/compression.py " + shlex.join(sys.argv[1:] if argv is None else argv)

    import hf_ext  # noqa: F401
    from hf_ext.common.models import load_model
    from hf_ext.common.perplexity import perplexity
    from hf_ext.common.utils import atomic_write_json, atomic_write_text
    from hf_ext.compression.report import plot_allocations

    settings = [s for s in grid(args.sparsities) if not args.only or any(o in label(s) for o in args.only)]
    cache_path = Path(args.cache) if args.cache else None
    cache = json.loads(cache_path.read_text()) if cache_path and cache_path.is_file() else {}
    dense_key = f"dense|{args.max_tokens}"
    if args.report_only:  # tables from the cache alone: settings not in it are reported as not run
        if dense_key not in cache:
            raise SystemExit(f"--report-only needs {dense_key!r} in the cache {args.cache}.")
        dense = types.SimpleNamespace(**cache[dense_key])
        rows = [cache.get(cache_key(s, args), {**s, "skipped": True}) for s in settings]
    else:
        model, tok = load_model(args.model)
        if dense_key in cache:
            dense = types.SimpleNamespace(**cache[dense_key])
        else:
            dense = perplexity(model, tok, "pydocs", seqlen=512, max_tokens=args.max_tokens, progress=False)
            if cache_path:
                cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
                cache[dense_key] = {"perplexity": dense.perplexity, "protocol": dense.protocol}
                atomic_write_json(cache_path, cache)
        print(f"[compression] dense ppl {dense.perplexity:.3f} ({dense.protocol})", file=sys.stderr, flush=True)
        rows = run_ours(model, tok, settings, args)
        del model
    with tempfile.TemporaryDirectory() as d:
        llmc, llmc_note = ([], "not run (--no-llmc)") if args.no_llmc else run_llmc(args, Path(d))
        if args.size_json:
            size = json.loads(Path(args.size_json).read_text())
        else:
            size = None if args.no_size or args.report_only else run_cli_size(args, Path(d))
    top = max(args.sparsities)
    ran = [r for r in rows if not r.get("skipped") and r["sparsity"] == top and not r.get("bits")]
    RESULTS.mkdir(parents=True, exist_ok=True)
    if ran:
        plot_allocations({label(r): r["blocks"] for r in ran}, RESULTS / "compression_allocation.png",
                         title=f"Gemma 3 270M, {top:.0%} target: per-block sparsity by allocation")
    text = report(dense, rows, llmc, llmc_note, size, args, command)
    atomic_write_text(args.out, text)
    atomic_write_json(Path(args.out).with_suffix(".json"),
                      {"dense": vars(dense) if isinstance(dense, types.SimpleNamespace) else dense.to_dict(),
                       "hf_ext": rows, "llmc": llmc, "size": size})
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
