"""Compression benchmark: hf-ext vs llm-compressor at 70 % sparsity (and 70 % + 4 / 3 bits) on the default model.

One invocation runs, for each calibration seed in turn (rounds interleaved: hf-ext rows, then llm-compressor rows):

* hf-ext rows (in this process, fixed ``--threads``): allocations (uniform, OWL, MRP measured and simulated, Hessian)
  x metrics (Wanda, SparseGPT), the fixed-mask refit, and 70 % + 4 / 3 bits (group 128) jointly (SparseGPT's sweep
  compensating both errors) against SparseGPT then plain rounding on the same mask;
* llm-compressor 0.14 rows through ``benchmarks/llmc_baseline.py`` in its own venv ``.venv-llmc`` (created there on
  first use; if it cannot be created or run, the report says the llm-compressor rows were not run and why), on the
  same calibration windows and the same evaluation.

Every row: perplexity on ``pydocs`` eval (512-token windows with BOS, ``--max-tokens`` predicted tokens), mean and
spread (min..max) over the seeds; sparsity counted on the masks and exact-zero fraction of the weights; checkpoint
bytes of the compressed linears and their resident bytes in memory. One extra measurement compares the resident
modes (dense cache vs packed only): bytes, process RSS and greedy decode speed. Findings are computed from the data.

    python benchmarks/compression.py            # the published measurement (see --help for the protocol knobs)
    python benchmarks/compression.py --quick    # what fits in about 10 minutes (1 seed, 4k tokens, 7 rows)
    python benchmarks/compression.py --smoke    # tiny model, tiny shapes, no llm-compressor: checks the script

Cost on the idle 2-core machine (estimated from op counts and the REFERENCES timings, not measured): the published
protocol (3 seeds, 16,352 evaluation tokens = about 80 s per row, 16 hf-ext + 9 llm-compressor rows) takes about
4-5 hours: per seed about 45 min of hf-ext rows, 12 min of measured-MRP allocation (one block re-pruning per 0.05
step), 20 min of ALPS (``--no-alps`` drops it) and 20 min of llm-compressor; ``--seeds 0`` is a third of that.
The first llm-compressor run also creates ``.venv-llmc`` (pip, several minutes).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _report  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's hf_ext, whatever the venv's install points at
LLMC_SCRIPT = REPO / "benchmarks" / "llmc_baseline.py"


def hf_rows(s: float, alps: bool = True) -> list[dict]:
    """hf-ext settings: name -> CompressionConfig fields (+ ``post_rtn``: prune, then round the kept weights).
    ``alps`` adds the ALPS rows (up to 300 ADMM iterations per linear: much slower than SparseGPT)."""
    sg = dict(sparsity=s, metric="sparsegpt")
    rows = [dict(name="uniform wanda", sparsity=s, metric="wanda"),
            dict(name="uniform sparsegpt", **sg),
            dict(name="owl sparsegpt", allocation="owl", **sg),
            dict(name="mrp(measured) sparsegpt", allocation="mrp", mrp_mode="measured", **sg),
            dict(name="mrp(simulated) sparsegpt", allocation="mrp", mrp_mode="simulated", **sg),
            dict(name="hessian sparsegpt", allocation="hessian", **sg),
            dict(name="uniform sparsegpt refit", refit_iters=10, **sg),
            dict(name="owl sparsegpt refit", allocation="owl", refit_iters=10, **sg)]
    for bits in (4, 3):
        rows += [dict(name=f"uniform sparsegpt then RTN w{bits}", post_rtn=bits, **sg),
                 dict(name=f"uniform sparsegpt joint w{bits}", bits=bits, **sg),
                 dict(name=f"uniform sparsegpt refit joint w{bits}", bits=bits, refit_iters=10, **sg)]
    if alps:
        rows += [dict(name="uniform alps", sparsity=s, metric="alps"),
                 dict(name="uniform alps joint w4", sparsity=s, metric="alps", bits=4)]
    return rows


QUICK_ROWS = ("uniform sparsegpt", "uniform sparsegpt refit", "uniform sparsegpt then RTN w4",
              "uniform sparsegpt joint w4")


def llmc_grid(s: float, quick: bool = False) -> str:
    if quick:
        return ",".join([f"sparsegpt:{s}", f"sparsegpt+gptq:{s}:w4", f"sparsegpt+rtn:{s}:w4"])
    return ",".join(["dense", f"sparsegpt:{s}", f"wanda:{s}", f"sparsegpt:{s}:owl", f"wanda:{s}:owl",
                     f"sparsegpt+gptq:{s}:w4", f"sparsegpt+rtn:{s}:w4", f"sparsegpt+gptq:{s}:w3",
                     f"sparsegpt+rtn:{s}:w3"])


# ------------------------------------------------------------------------------------------------- hf-ext side


def round_after(model, bits: int, group_size: int | None) -> None:
    """Replace every compressed linear by its mask with the kept weights rounded (no compensation)."""
    from torch import nn

    from hf_ext.common.arch import set_submodule
    from hf_ext.common.quantizer import replaced_modules
    from hf_ext.compression import CompressedLinear
    from hf_ext.compression.layer import quantize_kept

    for name, mod in replaced_modules(model, CompressedLinear).items():
        keep, w = mod.keep_mask(), mod.dequantize()
        lin = nn.Linear(mod.in_features, mod.out_features, bias=mod.bias is not None, dtype=w.dtype)
        lin.weight.data.copy_(w)
        if mod.bias is not None:
            lin.bias.data.copy_(mod.bias)
        new_w, scale, zero = quantize_kept(w, keep, bits, group_size)
        set_submodule(model, name, CompressedLinear.from_linear(lin, keep, new_w, bits, group_size, scale, zero))


def layer_bytes(model) -> dict:
    from hf_ext.common.quantizer import replaced_modules
    from hf_ext.compression import CompressedLinear

    layers = list(replaced_modules(model, CompressedLinear).values())
    zeros = sum(int((m.dequantize() == 0).sum()) for m in layers)
    numel = sum(m.in_features * m.out_features for m in layers)
    return {"disk_bytes": sum(m.packed_bytes() for m in layers),
            "resident_bytes": sum(m.resident_bytes() for m in layers), "dense_fp16_bytes": 2 * numel,
            "zero_fraction": zeros / numel}


def run_hf_seed(model, tok, rows: list[dict], seed: int, args) -> list[dict]:
    from hf_ext.common.data import calibration_batches
    from hf_ext.common.perplexity import perplexity
    from hf_ext.compression import CompressionConfig, compress
    from hf_ext.compression.pipeline import allocation_from_stats, collect_allocation_stats

    base = dict(calibration="pydocs", n_samples=args.n_samples, seqlen=args.seqlen, seed=seed,
                group_size=args.group_size, mrp_step=args.mrp_step)
    fields = lambda r: {k: v for k, v in r.items() if k not in ("name", "post_rtn")}  # noqa: E731
    cfg0 = CompressionConfig(**base, sparsity=args.sparsity, metric="sparsegpt")
    ids = calibration_batches(tok, "pydocs", args.n_samples, args.seqlen, seed=seed)
    stats = collect_allocation_stats(model, ids, cfg0, owl=True, mrp_metrics=("sparsegpt",),
                                     hessian_sparsities=(args.sparsity,), mrp_modes=("measured", "simulated"))
    log(f"seed {seed}: shared statistics pass {stats.seconds:.1f} s")
    out = []
    for r in rows:
        cfg = CompressionConfig(**base, **fields(r))
        notes, alloc_s = [], 0.0
        if cfg.allocation != "uniform":
            t0 = time.perf_counter()
            cfg.block_sparsities, notes = allocation_from_stats(stats, cfg)
            alloc_s = time.perf_counter() - t0
        t0, c0 = time.perf_counter(), time.process_time()
        m = compress(copy.deepcopy(model), tok, cfg)
        if r.get("post_rtn"):
            round_after(m, r["post_rtn"], args.group_size)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        ppl = perplexity(m, tok, "pydocs", seqlen=args.eval_seqlen, max_tokens=args.max_tokens, progress=False)
        q = m.config.quantization_config
        out.append({"name": r["name"], "seed": seed, "ppl": ppl.perplexity, "seconds": seconds, "cpu_seconds": cpu,
                    "allocation_seconds": alloc_s, "stats_seconds": stats.seconds if notes else 0.0,
                    "mask_sparsity": q.achieved_sparsity, "blocks": q.block_sparsities, "notes": notes,
                    "protocol": ppl.protocol, "bits": r.get("bits") or r.get("post_rtn"), **layer_bytes(m)})
        log(f"seed {seed} {r['name']}: ppl {ppl.perplexity:.3f} ({seconds:.0f} s + allocation {alloc_s:.0f} s)")
        del m
    return out


_LOAD_AND_DECODE = """
import json, sys, time, torch
import hf_ext  # noqa: F401
from transformers import AutoModelForCausalLM
from hf_ext.common.quantizer import replaced_modules
from hf_ext.compression import CompressedLinear
folder, threads, prompt, n = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
m = AutoModelForCausalLM.from_pretrained(folder)
rss = next(int(x.split()[1]) / 1024 for x in open("/proc/self/status") if x.startswith("VmRSS:"))
layers = replaced_modules(m, CompressedLinear).values()
t0 = time.perf_counter()
with torch.no_grad():
    gen = m.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False)
print(json.dumps({"rss_mib": rss, "tokens_per_s": n / (time.perf_counter() - t0), "tokens": gen[0].tolist(),
                  "resident_bytes": sum(x.resident_bytes() for x in layers),
                  "disk_bytes": sum(x.packed_bytes() for x in layers),
                  "dense_fp16_bytes": sum(2 * x.in_features * x.out_features for x in layers)}))
"""


def resident_modes(model, tok, args) -> dict:
    """70 % + 4-bit joint saved twice (resident "dense" / "packed"), each reloaded in a fresh process: resident
    bytes of the compressed linears, process RSS after loading, greedy decode speed, and whether the tokens match."""
    from hf_ext.compression import CompressionConfig, compress, set_resident

    cfg = CompressionConfig(sparsity=args.sparsity, metric="sparsegpt", bits=4, group_size=args.group_size,
                            calibration="pydocs", n_samples=args.n_samples, seqlen=args.seqlen)
    m = compress(copy.deepcopy(model), tok, cfg)
    prompt = tok.encode("def main():\n    return 0\n" * 6)[: args.prompt_tokens]
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("dense", "packed"):
            set_resident(m, mode)
            m.save_pretrained(Path(tmp) / mode)
            cmd = [sys.executable, "-c", _LOAD_AND_DECODE, str(Path(tmp) / mode), str(args.threads),
                   json.dumps(prompt), str(args.decode_tokens)]
            res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=1800)
            if res.returncode:
                raise RuntimeError(f"reloading the {mode} checkpoint failed: {res.stderr[-2000:]}")
            out[mode] = json.loads(res.stdout.strip().splitlines()[-1])
    out["identical"] = out["dense"]["tokens"] == out["packed"]["tokens"]
    del m
    return out


# ---------------------------------------------------------------------------------------- llm-compressor side


def run_llmc_seed(seed: int, args, tmp: Path) -> tuple[list[dict], str]:
    """llm-compressor rows for one seed (its own venv, created by llmc_baseline.py when missing)."""
    if args.no_llmc:
        return [], "not run (--no-llmc or --smoke)"
    out = tmp / f"llmc_{seed}.json"
    cmd = [sys.executable, str(LLMC_SCRIPT), "--grid", llmc_grid(args.sparsity, args.quick),
           "--n-samples", str(args.n_samples), "--seqlen", str(args.seqlen), "--seed", str(seed),
           "--max-tokens", str(args.max_tokens), "--eval-seqlen", str(args.eval_seqlen),
           "--threads", str(args.threads), "--json", str(out)]
    log("$ " + " ".join(cmd))
    try:
        res = subprocess.run(cmd, cwd=REPO, timeout=args.llmc_timeout_min * 60)
    except subprocess.TimeoutExpired:
        return (json.loads(out.read_text()) if out.is_file() else []), f"timed out after {args.llmc_timeout_min} min"
    if not out.is_file():
        return [], f"NOT RUN: llmc_baseline.py exited {res.returncode} without results (venv .venv-llmc missing " \
                   "and not creatable here?)"
    return [dict(r, name=llmc_name(r), seed=seed) for r in json.loads(out.read_text())], "ran"


def llmc_name(r: dict) -> str:
    name = r["method"] + (f" {r['sparsity']:.0%}" if r.get("sparsity") is not None else "")
    name += f" W{r['bits']}A16" if r.get("bits") else ""
    return name + ("" if r.get("profile", "uniform") == "uniform" else f" ({r['profile']})")


# ------------------------------------------------------------------------------------------------- aggregation


def summarize(rows: list[dict]) -> dict[str, dict]:
    """name -> mean / min / max perplexity over seeds, mean of the other numbers, the first seed's blocks."""
    out: dict[str, dict] = {}
    for r in rows:
        if r.get("ppl") is None:
            continue
        out.setdefault(r["name"], {"runs": []})["runs"].append(r)
    for agg in out.values():
        runs = agg["runs"]
        ppls = [r["ppl"] for r in runs]
        agg.update(mean=statistics.fmean(ppls), lo=min(ppls), hi=max(ppls), n=len(ppls),
                   sd=statistics.stdev(ppls) if len(ppls) > 1 else 0.0)
        for key in ("seconds", "cpu_seconds", "allocation_seconds", "mask_sparsity", "zero_fraction", "disk_bytes",
                    "resident_bytes"):
            vals = [r[key] for r in runs if r.get(key) is not None]
            agg[key] = statistics.fmean(vals) if vals else None
    return out


def fmt_row(name: str, a: dict) -> str:
    f = lambda v, p=4: "-" if v is None else f"{v:.{p}f}"  # noqa: E731
    mib = lambda v: "-" if not v else f"{v / 2**20:.2f}"  # noqa: E731
    return (f"| {name} | {a['mean']:.3f} | {a['lo']:.3f}..{a['hi']:.3f} (n={a['n']}) | {f(a.get('mask_sparsity'))} | "
            f"{f(a.get('zero_fraction'))} | {mib(a.get('disk_bytes'))} | {mib(a.get('resident_bytes'))} | "
            f"{f(a.get('seconds'), 0)} | {f(a.get('allocation_seconds'), 0)} |")


def findings(ours: dict, theirs: dict, sparsity: float, resident: dict | None) -> list[str]:
    """Statements computed from the aggregated rows (each says the numbers it rests on)."""
    out = []
    sparse_ours = {k: v for k, v in ours.items() if not v["runs"][0].get("bits")}
    sparse_theirs = {k: v for k, v in theirs.items() if " W" not in k and not k.startswith("dense")}
    if sparse_ours:
        best = min(sparse_ours, key=lambda k: sparse_ours[k]["mean"])
        out.append(f"Best hf-ext setting at {sparsity:.0%} (sparsity only): {best}, perplexity "
                   f"{sparse_ours[best]['mean']:.3f}.")
        if sparse_theirs:
            tb = min(sparse_theirs, key=lambda k: sparse_theirs[k]["mean"])
            ratio = sparse_ours[best]["mean"] / sparse_theirs[tb]["mean"]
            out.append(f"Against llm-compressor's best ({tb}, {sparse_theirs[tb]['mean']:.3f}): ratio {ratio:.3f} "
                       f"({'meets' if ratio <= 0.9 else 'misses'} the 0.9x bar; the 0.7x goal is "
                       f"{'met' if ratio <= 0.7 else 'not met'}).")
    uni = ours.get("uniform sparsegpt")
    if uni:
        for alloc in ("owl", "mrp(measured)", "mrp(simulated)", "hessian"):
            a = ours.get(f"{alloc} sparsegpt")
            if a:
                verdict = "helps" if a["hi"] < uni["lo"] else ("hurts" if a["lo"] > uni["hi"] else
                                                                "is within the seed spread of uniform")
                out.append(f"{alloc} allocation with SparseGPT: {a['mean']:.3f} vs uniform {uni['mean']:.3f} "
                           f"({a['mean'] / uni['mean']:.3f}x): {verdict}.")
        ref = ours.get("uniform sparsegpt refit")
        if ref:
            out.append(f"Fixed-mask refit (10 CG steps): {ref['mean']:.3f} vs {uni['mean']:.3f} without "
                       f"({ref['mean'] / uni['mean']:.3f}x), {ref['seconds'] - uni['seconds']:+.0f} s per run.")
    alps = ours.get("uniform alps")
    if alps and uni:
        out.append(f"ALPS (ADMM support + CG): {alps['mean']:.3f} vs SparseGPT {uni['mean']:.3f} "
                   f"({alps['mean'] / uni['mean']:.3f}x) in {alps['seconds']:.0f} s vs {uni['seconds']:.0f} s.")
    mm, ms = ours.get("mrp(measured) sparsegpt"), ours.get("mrp(simulated) sparsegpt")
    if mm and ms:
        out.append(f"MRP measured vs simulated: allocation {mm['allocation_seconds']:.0f} s vs "
                   f"{ms['allocation_seconds']:.0f} s; perplexity {mm['mean']:.3f} vs {ms['mean']:.3f}.")
        alloc_runs = [tuple(r["blocks"]) for r in mm["runs"] if r["seed"] == mm["runs"][0]["seed"]]
        if len(alloc_runs) > 1:
            out.append(f"MRP measured is deterministic per seed: {len(set(alloc_runs)) == 1}.")
    for bits in (4, 3):
        joint = ours.get(f"uniform sparsegpt joint w{bits}")
        best_joint = min((v for k, v in ours.items() if k.endswith(f"joint w{bits}")), key=lambda v: v["mean"],
                         default=None)
        if not joint:
            continue
        rivals = {"our SparseGPT then RTN": ours.get(f"uniform sparsegpt then RTN w{bits}"),
                  "llm-compressor SparseGPT + GPTQ": theirs.get(f"sparsegpt+gptq {sparsity:.0%} W{bits}A16"),
                  "llm-compressor SparseGPT + plain rounding": theirs.get(f"sparsegpt+rtn {sparsity:.0%} W{bits}A16")}
        name = next(k for k, v in ours.items() if v is best_joint)
        parts = []
        for label, r in rivals.items():
            if r:
                zf = f", zero fraction {r['zero_fraction']:.4f}" if r.get("zero_fraction") is not None else ""
                parts.append(f"{label} {r['mean']:.3f} ({'beaten' if best_joint['hi'] < r['lo'] else 'NOT beaten'}"
                             f"{zf})")
        out.append(f"{sparsity:.0%} + {bits}-bit: best joint ({name}) {best_joint['mean']:.3f} with mask sparsity "
                   f"{best_joint['mask_sparsity']:.4f}, {best_joint['disk_bytes'] / 2**20:.2f} MiB on disk; vs "
                   + "; ".join(parts) + ".")
    if resident:
        d, p = resident["dense"], resident["packed"]
        out.append(f"Resident memory of the compressed linears (70 % + 4-bit): {d['resident_bytes'] / 2**20:.2f} MiB "
                   f"with the dense cache vs {p['resident_bytes'] / 2**20:.2f} MiB packed only (dense fp16 "
                   f"{d['dense_fp16_bytes'] / 2**20:.2f} MiB, disk {d['disk_bytes'] / 2**20:.2f} MiB); process RSS "
                   f"after a fresh reload {d['rss_mib']:.0f} vs {p['rss_mib']:.0f} MiB; greedy decode "
                   f"{d['tokens_per_s']:.2f} vs {p['tokens_per_s']:.2f} tokens/s; identical tokens: "
                   f"{resident['identical']}.")
    return out


def render(ours: dict, theirs: dict, dense: dict, llmc_status: list[str], resident: dict | None, args) -> str:
    head = ("| setting | perplexity (mean) | min..max over seeds | mask sparsity | zero fraction | disk MiB | "
            "resident MiB | compress s | allocation s |\n|---|---|---|---|---|---|---|---|---|")
    lines = [f"Model: {args.model}; calibration: pydocs calibration split, {args.n_samples} x {args.seqlen} tokens, "
             f"seeds {args.seeds} (the same windows for both tools); evaluation: {dense['protocol']}; torch threads "
             f"{args.threads}; group size {args.group_size}; MRP step {args.mrp_step}.",
             "Mask sparsity is counted on hf-ext's masks; zero fraction counts every exact zero of the weights "
             "(kept weights that round to 0 and, on the default model, its 4.55 % pre-existing zeros included). "
             "Disk MiB: the compressed linears' packed buffers; resident MiB: what they hold in memory (parameters, "
             "buffers and the dense weight cache of the default resident='dense' mode).",
             "", f"Dense perplexity: {dense['ppl']:.3f}", "", "## hf-ext", "", head]
    lines += [fmt_row(k, v) for k, v in ours.items()]
    lines += ["", "## llm-compressor 0.14 (oneshot, own venv)", "", "Per seed: " + "; ".join(llmc_status), ""]
    if theirs:
        lines += [head] + [fmt_row(k, v) for k, v in theirs.items()]
    lines += ["", "## Findings (computed from the rows above)", ""]
    lines += [f"- {f}" for f in findings(ours, theirs, args.sparsity, resident)]
    lines += ["", "## Allocations (first seed)", ""]
    for k, v in ours.items():
        r = v["runs"][0]
        if r["notes"]:
            lines.append(f"- {k}: blocks " + ", ".join(f"{b:.3f}" for b in r["blocks"]) + "; " + " ".join(r["notes"]))
    return "\n".join(lines) + "\n"


def log(msg: str) -> None:
    print(f"[compression] {msg}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny model and shapes, no llm-compressor, to benchmarks/out")
    p.add_argument("--model", default="default", help="model folder ('default': Gemma 3 270M)")
    p.add_argument("--sparsity", type=float, default=0.7)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="calibration seeds (rounds)")
    p.add_argument("--n-samples", type=int, default=16)
    p.add_argument("--seqlen", type=int, default=256)
    p.add_argument("--group-size", type=int, default=128)
    p.add_argument("--mrp-step", type=float, default=0.05, help="MRP step (measured MRP re-prunes a block per step)")
    p.add_argument("--max-tokens", type=int, default=16352, help="predicted evaluation tokens (32 windows of 512)")
    p.add_argument("--eval-seqlen", type=int, default=512)
    p.add_argument("--threads", type=int, default=2, help="torch threads, here and in llm-compressor's runs")
    p.add_argument("--only", nargs="*", default=None, help="hf-ext rows whose name contains one of these")
    p.add_argument("--no-llmc", action="store_true")
    p.add_argument("--no-alps", action="store_true", help="drop the ALPS rows (about 10x SparseGPT's time each)")
    p.add_argument("--quick", action="store_true",
                   help="what fits in about 10 minutes: seed 0, 4088 tokens, 4 hf-ext and 3 llm-compressor rows")
    p.add_argument("--llmc-timeout-min", type=float, default=120.0)
    p.add_argument("--decode-tokens", type=int, default=32)
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--out-dir", default=None, help="results folder (default benchmarks/results; smoke: benchmarks/out)")
    args = p.parse_args(argv)
    if args.smoke:
        args.seeds, args.n_samples, args.seqlen, args.max_tokens, args.eval_seqlen = [0, 1], 2, 32, 254, 128
        args.group_size, args.no_llmc, args.decode_tokens, args.prompt_tokens = 32, True, 4, 16
    if args.quick:
        args.seeds, args.max_tokens, args.no_alps = [0], 4088, True
        args.only = args.only or list(QUICK_ROWS)
    torch.set_num_threads(args.threads)
    out_dir = Path(args.out_dir or (REPO / "benchmarks" / ("out" if args.smoke else "results")))
    _report.RESULTS_DIR = out_dir  # write_section writes <out_dir>/compression.md

    import hf_ext  # noqa: F401
    from hf_ext.common.models import load_model, tiny_model
    from hf_ext.common.perplexity import perplexity
    from hf_ext.common.utils import atomic_write_json
    from hf_ext.compression.report import plot_allocations

    load_before = _report.load_average()
    if args.smoke:
        model, tok = tiny_model("llama")
        args.model = "tiny llama (smoke)"
    else:
        model, tok = load_model(args.model)
    model.eval()
    d = perplexity(model, tok, "pydocs", seqlen=args.eval_seqlen, max_tokens=args.max_tokens, progress=False)
    dense = {"ppl": d.perplexity, "protocol": d.protocol}
    rows = [r for r in hf_rows(args.sparsity, not args.no_alps)
            if not args.only or any(o == r["name"] if args.quick else o in r["name"] for o in args.only)]
    ours, theirs, status = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:  # one round per seed: both tools on the same windows, one after the other
            ours += run_hf_seed(model, tok, rows, seed, args)
            got, note = run_llmc_seed(seed, args, Path(tmp))
            theirs += got
            status.append(f"seed {seed}: {note}")
    resident = resident_modes(model, tok, args)
    agg_ours, agg_theirs = summarize(ours), summarize(theirs)
    body = render(agg_ours, agg_theirs, dense, status, resident, args)
    out_dir.mkdir(parents=True, exist_ok=True)
    first = {k: v["runs"][0]["blocks"] for k, v in agg_ours.items() if v["runs"][0]["notes"]}
    if first:
        plot_allocations(first, out_dir / "compression_allocation.png",
                         title=f"{args.model}, {args.sparsity:.0%}: per-block sparsity by allocation (seed "
                               f"{args.seeds[0]})")
        body += "\nPlot: `compression_allocation.png` (per-block sparsity of each allocation, first seed).\n"
    path = _report.write_section("compression", "Compression: hf-ext vs llm-compressor (sparsity, sparse + low-bit)",
                                 body, packages=("safetensors", "accelerate"), load_before=load_before)
    atomic_write_json(out_dir / "compression.json", {"dense": dense, "hf_ext": ours, "llmc": theirs,
                                                     "resident": resident, "args": vars(args)})
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
