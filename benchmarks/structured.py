"""Structured pruning (MINI-LLM) on the default model (Gemma 3 270M), this CPU.

Measures, in one run:
  * perplexity (pydocs eval, 512-token windows with BOS, --max-tokens predicted tokens) of the dense model and of
    every criterion (mini_llm, magnitude, activation, taylor) at each ratio, before and after a short LoRA recovery;
  * peak memory and wall time of the scoring step of mini_llm (forward-only SPSA) and taylor (backprop), each in
    its own subprocess: peak RSS sampled every 2 ms by a thread during scoring, minus the RSS just before it;
  * real speed: prefill tokens/s (one 512-token prompt) and greedy decode tokens/s (32 new tokens after a 64-token
    prompt), same prompts, dense vs pruned, interleaved, best of --repeats;
  * save_pretrained -> from_pretrained(out) of a pruned model in a fresh process: identical logits.

Run: .venv/bin/python benchmarks/structured.py        (about 10-15 min on 2 free cores; much longer when shared)
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import cpu_name  # noqa: E402

CRITERIA = ("mini_llm", "magnitude", "activation", "taylor")
ROOT = Path(__file__).resolve().parent.parent


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def make_config(args, criterion: str, ratio: float, recovery_steps: int = 0):
    from hf_ext.structured import StructuredPruningConfig

    return StructuredPruningConfig(
        ratio=ratio, criterion=criterion, n_samples=args.n_samples, seqlen=args.seqlen, batch_size=args.batch_size,
        spsa_queries=args.spsa_queries, recovery_steps=recovery_steps, recovery_batch_size=args.recovery_batch,
    )


def score_only(args) -> None:
    """Subprocess entry: score with one criterion, report peak-RSS delta and time, save the scores."""
    from hf_ext.common.models import load_default_model
    from hf_ext.structured.pruner import compute_scores, plan_for

    torch.set_num_threads(args.threads)
    model, tok = load_default_model()
    cfg = make_config(args, args.score_only, args.ratios[0])
    layouts, gran, _ = plan_for(model, cfg)
    with torch.no_grad():  # fault every weight page in (safetensors loads lazily) so the delta is scoring only
        sum(float(p.sum()) for p in model.parameters())
    base = rss_mib()
    peak = [base]
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_mib())
            time.sleep(0.002)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    start = time.perf_counter()
    scores = compute_scores(model, tok, cfg, layouts, gran)
    seconds = time.perf_counter() - start
    stop.set()
    th.join()
    torch.save([(s.heads, s.channels) for s in scores], args.scores_out)
    print(json.dumps({"peak_delta_mib": peak[0] - base, "base_mib": base, "seconds": seconds}))


def scores_in_subprocess(args, criterion: str, tmp: str) -> tuple[list, dict]:
    from hf_ext.structured.importance import BlockScores

    out = os.path.join(tmp, f"{criterion}.pt")
    cmd = [sys.executable, __file__, "--score-only", criterion, "--scores-out", out, "--n-samples",
           str(args.n_samples), "--seqlen", str(args.seqlen), "--batch-size", str(args.batch_size),
           "--spsa-queries", str(args.spsa_queries), "--threads", str(args.threads), "--ratios", str(args.ratios[0]),
           "--recovery-batch", str(args.recovery_batch)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    info = json.loads(res.stdout.strip().splitlines()[-1])
    return [BlockScores(h, c) for h, c in torch.load(out)], info


@torch.no_grad()
def speed(model, prefill_ids, decode_ids, new_tokens: int) -> tuple[float, float]:
    start = time.perf_counter()
    model(input_ids=prefill_ids, use_cache=False)
    prefill = prefill_ids.numel() / (time.perf_counter() - start)
    start = time.perf_counter()
    out = model.generate(input_ids=decode_ids, attention_mask=torch.ones_like(decode_ids), max_new_tokens=new_tokens,
                         min_new_tokens=new_tokens, do_sample=False)
    decode = (out.shape[1] - decode_ids.shape[1]) / (time.perf_counter() - start)
    return prefill, decode


def speed_only(args) -> None:
    from hf_ext.common.data import load_text, tokenize_stream
    from hf_ext.common.models import load_default_model
    from hf_ext.structured import prune_structured

    torch.set_num_threads(args.threads)
    model, tok = load_default_model()
    # the loaded weights are file-backed (safetensors mmap); a copy puts dense and pruned in the same kind of memory
    model = copy.deepcopy(model)
    stream = tokenize_stream(tok, load_text("pydocs", "eval")[200:260], max_tokens=600)
    prefill_ids = torch.cat([torch.tensor([tok.bos_token_id]), stream[:255]])[None]
    decode_ids = prefill_ids[:, :64]
    pruned = {}
    for ratio in args.ratios:
        m = copy.deepcopy(model)
        prune_structured(m, tok, make_config(args, "magnitude", ratio))
        pruned[ratio] = m
    best = {"dense": [0.0, 0.0], **{r: [0.0, 0.0] for r in args.ratios}}
    for _ in range(args.repeats):  # interleaved so that load changes hit every model alike
        for key, m in [("dense", model), *pruned.items()]:
            best[key] = [max(a, b) for a, b in zip(best[key], speed(m, prefill_ids, decode_ids, 16))]
    cpu = cpu_name()
    load = os.getloadavg()
    lines = ["# Structured pruning: tokens/s, pruned vs dense (Gemma 3 270M, fp32)", "",
             f"Command: `.venv/bin/python benchmarks/structured.py {' '.join(sys.argv[1:])}`",
             f"Machine: {cpu}, {args.threads} threads, shared (load average {load[0]:.1f} at the end). Date: "
             f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC. Prefill: one 256-token forward; "
             f"decode: greedy generate of 16 new tokens after a 64-token prompt; best of {args.repeats}, interleaved.",
             "", "| model | params (M) | prefill tok/s | decode tok/s |", "|---|---|---|---|"]
    for key, m in [("dense", model), *pruned.items()]:
        name = "dense" if key == "dense" else f"pruned {100 * key:.0f} %"
        pf, dc = best[key]
        rel = "" if key == "dense" else f" ({pf / best['dense'][0]:.2f}x)"
        reld = "" if key == "dense" else f" ({dc / best['dense'][1]:.2f}x)"
        params = sum(p.numel() for p in m.parameters()) / 1e6
        lines.append(f"| {name} | {params:.1f} | {pf:.0f}{rel} | {dc:.2f}{reld} |")
    text = "\n".join(lines) + "\n"
    print(text)
    from hf_ext.common.utils import atomic_write_text

    atomic_write_text(Path(args.out).with_name("structured_speed.md"), text)


def reload_check(model, tok, prompt_ids) -> float:
    """Save, reload in a fresh process with only ``import hf_ext``, compare logits; returns max |diff|."""
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        tok.save_pretrained(d)
        torch.save(prompt_ids, f"{d}/ids.pt")
        with torch.no_grad():
            ref = model(input_ids=prompt_ids).logits
        code = (f"import torch, hf_ext; from transformers import AutoModelForCausalLM as A; "
                f"m = A.from_pretrained({d!r}); ids = torch.load({d!r} + '/ids.pt'); "
                f"torch.save(m(input_ids=ids).logits.detach(), {d!r} + '/out.pt')")
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if res.returncode:
            raise RuntimeError(f"reload in a fresh process failed:\n{res.stderr[-3000:]}")
        return (torch.load(f"{d}/out.pt") - ref).abs().max().item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ratios", type=float, nargs="+", default=[0.2, 0.35])
    p.add_argument("--criteria", nargs="+", default=list(CRITERIA), choices=CRITERIA)
    p.add_argument("--n-samples", type=int, default=8)
    p.add_argument("--seqlen", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--spsa-queries", type=int, default=8)
    p.add_argument("--recovery-steps", type=int, default=12)
    p.add_argument("--recovery-batch", type=int, default=1)
    p.add_argument("--max-tokens", type=int, default=2044)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/structured.md"))
    p.add_argument("--speed-only", action="store_true",
                   help="only the tokens/s comparison (magnitude pruning: speed depends on shapes, which every "
                        "criterion shares), best of --repeats, written to results/structured_speed.md")
    p.add_argument("--score-only", default=None, help=argparse.SUPPRESS)
    p.add_argument("--scores-out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.score_only:
        return score_only(args)
    if args.speed_only:
        return speed_only(args)

    from hf_ext.common.data import load_text, tokenize_stream
    from hf_ext.common.models import load_default_model
    from hf_ext.common.perplexity import perplexity
    from hf_ext.structured import prune_structured
    from hf_ext.structured.pruner import compute_scores, plan_for
    from hf_ext.structured.recovery import lora_recover

    torch.set_num_threads(args.threads)
    wall = time.perf_counter()
    model, tok = load_default_model()

    def ppl(m) -> float:
        return perplexity(m, tok, "pydocs", seqlen=512, max_tokens=args.max_tokens, progress=False).perplexity

    dense_ppl = ppl(model)
    print(f"dense perplexity {dense_ppl:.3f}", flush=True)
    stream = tokenize_stream(tok, load_text("pydocs", "eval")[200:260], max_tokens=600)
    prefill_ids = torch.cat([torch.tensor([tok.bos_token_id]), stream[:511]])[None]
    decode_ids = prefill_ids[:, :64]

    scores, score_info = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for crit in args.criteria:
            if crit in ("mini_llm", "taylor"):
                scores[crit], score_info[crit] = scores_in_subprocess(args, crit, tmp)
            else:
                cfg = make_config(args, crit, args.ratios[0])
                layouts, gran, _ = plan_for(model, cfg)
                start = time.perf_counter()
                scores[crit] = compute_scores(model, tok, cfg, layouts, gran)
                score_info[crit] = {"seconds": time.perf_counter() - start}
            print(crit, "scored", score_info[crit], flush=True)

    rows, speeds, reload_diff = [], [], None
    for ratio in args.ratios:
        for crit in args.criteria:
            cfg = make_config(args, crit, ratio)
            pruned = copy.deepcopy(model)
            prune_structured(pruned, tok, cfg, scores=scores[crit])
            report = pruned.hf_quantizer.report
            before = ppl(pruned)
            if crit == "mini_llm":
                best = [0.0, 0.0, 0.0, 0.0]
                for _ in range(args.repeats):
                    d = speed(model, prefill_ids, decode_ids, 32)
                    q = speed(pruned, prefill_ids, decode_ids, 32)
                    best = [max(a, b) for a, b in zip(best, (*d, *q))]
                speeds.append((ratio, report.params_after, *best))
                if reload_diff is None:
                    reload_diff = reload_check(pruned, tok, prefill_ids[:, :128])
            rec = lora_recover(pruned, tok, cfg.copy(recovery_steps=args.recovery_steps), progress=False)
            after = ppl(pruned)
            rows.append((ratio, crit, report.achieved_ratio, report.params_after, before, after, rec["seconds"]))
            print(rows[-1], flush=True)
            del pruned
            # partial results after every row, so a long run on a busy machine still leaves a table
            write_results(args, dense_ppl, sum(x.numel() for x in model.parameters()), rows, score_info, speeds,
                          reload_diff, time.perf_counter() - wall, quiet=True)
    total = time.perf_counter() - wall
    write_results(args, dense_ppl, sum(x.numel() for x in model.parameters()), rows, score_info, speeds,
                  reload_diff, total)


def write_results(args, dense_ppl, dense_params, rows, score_info, speeds, reload_diff, total,
                  quiet: bool = False) -> None:
    cpu = cpu_name()
    lines = [
        "# Structured pruning (MINI-LLM) on Gemma 3 270M",
        "",
        f"Command: `.venv/bin/python benchmarks/structured.py {' '.join(sys.argv[1:])}`".rstrip(),
        f"Machine: {cpu}, {args.threads} threads (CPU shared with other jobs), torch {torch.__version__}, "
        f"Python {platform.python_version()}. Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC."
        f" Total wall time {total / 60:.1f} min.",
        "",
        f"Perplexity: pydocs eval split, non-overlapping 512-token windows with BOS first, {args.max_tokens} "
        f"predicted tokens. Calibration: {args.n_samples} x {args.seqlen} tokens of the pydocs calibration split "
        f"(seed 0). mini_llm: {args.spsa_queries} SPSA queries (2 forwards each), eps 0.01. Recovery: LoRA r=8 on "
        f"every projection, {args.recovery_steps} steps of {args.recovery_batch} x {args.seqlen} tokens, lr 5e-4, "
        "merged. Ratio = "
        "fraction of all attention + MLP projection parameters removed (the 168 M-parameter embedding / tied LM "
        "head is not prunable). No blocks protected.",
        "",
        f"Dense: {dense_params / 1e6:.1f} M parameters, perplexity **{dense_ppl:.3f}**.",
        "",
        "| ratio | criterion | achieved | params (M) | ppl pruned | ppl + LoRA | recovery s |",
        "|---|---|---|---|---|---|---|",
    ]
    for ratio, crit, ach, params, before, after, rec_s in rows:
        lines.append(f"| {ratio:.2f} | {crit} | {100 * ach:.2f} % | {params / 1e6:.1f} | {before:.3f} | "
                     f"{after:.3f} | {rec_s:.0f} |")
    lines += ["", "Scoring step (same calibration data for every criterion):", "",
              "| criterion | wall s | peak RSS delta MiB |", "|---|---|---|"]
    for crit, info in score_info.items():
        mem = f"{info['peak_delta_mib']:.0f}" if "peak_delta_mib" in info else "(in-process, not measured)"
        lines.append(f"| {crit} | {info['seconds']:.1f} | {mem} |")
    lines += ["", "Memory method: each of mini_llm / taylor scores in its own subprocess after loading the model; a "
              "thread samples VmRSS every 2 ms during scoring; the table gives the peak minus the RSS right before "
              "scoring (all weights already paged in). Scoring runs the LM loss on batches of "
              f"{args.batch_size} x {args.seqlen} tokens, so the 262k-vocabulary logits are a large part of both.", "",
              "Real speed (mini_llm-pruned vs dense, same prompts, fp32, best of "
              f"{args.repeats}, interleaved): prefill = one 512-token forward; decode = greedy generate of 32 new "
              "tokens after a 64-token prompt.", "",
              "| ratio | params (M) | prefill tok/s dense | prefill tok/s pruned | decode tok/s dense | "
              "decode tok/s pruned |", "|---|---|---|---|---|---|"]
    for ratio, params, pd, dd, pq, dq in speeds:
        lines.append(f"| {ratio:.2f} | {params / 1e6:.1f} | {pd:.0f} | {pq:.0f} ({pq / pd:.2f}x) | {dd:.1f} | "
                     f"{dq:.1f} ({dq / dd:.2f}x) |")
    if reload_diff is not None:
        lines += ["", f"save_pretrained -> from_pretrained(out) in a fresh process (only `import hf_ext`): max |logit "
                  f"difference| = {reload_diff:.2e}."]
    text = "\n".join(lines) + "\n"
    if not quiet:
        print(text)
    sys.path.insert(0, str(ROOT))
    from hf_ext.common.utils import atomic_write_text

    atomic_write_text(args.out, text)


if __name__ == "__main__":
    main()
