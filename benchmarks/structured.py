"""Structured pruning (MINI-LLM): quality over calibration seeds on Gemma 3 270M, speed on a 1.1B Llama shape.

One invocation measures, and writes ``results/structured.md`` and ``results/structured_speed.md``:
  * quality: ``mini_llm``, ``activation``, ``magnitude`` and ``taylor`` at each ratio (20 %, 35 %) on the default
    model, perplexity before and after the same LoRA recovery (fixed recovery windows and seed), over 3 calibration
    seeds (mean and min-max); pydocs eval split, 512-token windows with BOS, 8,176 predicted tokens;
  * scoring cost: wall time and peak memory of every criterion, each scoring in a fresh process (a thread samples
    VmRSS every 2 ms; peak minus the RSS just before scoring, weights already paged in); for ``mini_llm`` also the
    cosine of its forward-only gate gradient with the autograd one at the budget used (autograd only afterwards);
  * speed: prefill and greedy-decode tokens/s, dense vs 20 % removed, on a random-weight Llama-shaped model of
    1.1B parameters with a 32k vocabulary (TinyLlama's shape), 3 interleaved rounds (median, min-max); and the
    ceiling any block pruning has, from matmul parameters per token, for that model and for the default model,
    whose 262k-token LM head caps a 20 % cut at about 1.08x.

Run: ``.venv/bin/python benchmarks/structured.py`` (published). Estimated on the idle 2-core machine from earlier
idle measurements (Gemma forward about 200 tokens/s): about an hour: 41 perplexity evaluations of about 40 s
(27 min), mini_llm scoring at 1 query per unit, 72 passes of 8 x 128 tokens (about 6 min per seed, 18 min), 20 LoRA
recoveries of about 17 s (6 min), the other scorings and process starts (3 min), the speed part (about 3 min).
``--seeds 1`` takes about 22 min, ``--part speed`` about 3 min. ``--smoke``: tiny models, end to end in one to
three minutes, written to ``benchmarks/out/``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [os.path.dirname(os.path.abspath(__file__)), str(ROOT)]  # this checkout's hf_ext, not an installed one
import _report  # noqa: E402

CRITERIA = ("mini_llm", "activation", "magnitude", "taylor")
GRADIENT_FREE = ("activation", "magnitude")
RECOVERY_SEED = 100  # one recovery (windows and LoRA init) for every criterion and calibration seed
SPEED_SHAPES = {  # Llama-shaped, 32k vocabulary; "1.1b" is TinyLlama-1.1B's shape
    "1.1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                 num_key_value_heads=4),
    "smoke": dict(hidden_size=128, intermediate_size=384, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2),
}


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))


def load(args):
    if args.smoke:
        from hf_ext.common.models import tiny_model

        return tiny_model("llama")
    from hf_ext.common.models import load_default_model

    return load_default_model()


def make_cfg(args, criterion: str, ratio: float, seed: int):
    from hf_ext.structured import StructuredPruningConfig

    return StructuredPruningConfig(ratio=ratio, criterion=criterion, n_samples=args.n_samples, seqlen=args.seqlen,
                                   batch_size=args.batch_size, seed=seed, spsa_queries=args.spsa_queries,
                                   spsa_scope=args.spsa_scope, recovery_batch_size=args.recovery_batch)


def score_child(args) -> None:
    """Subprocess: score once, measure time and peak RSS, save scores (and the mini_llm gradient's cosine)."""
    import hf_ext.structured.pruner as pruner
    from hf_ext.common.data import calibration_batches
    from hf_ext.structured.gate_gradient import autograd_gate_gradient
    from hf_ext.structured.pruner import compute_scores, plan_for

    torch.set_num_threads(args.threads)
    model, tok = load(args)
    cfg = make_cfg(args, args.score_child, args.ratios[0], args.seed)
    layouts, gran, _ = plan_for(model, cfg)
    # windows read and tokenized before the measurement: reading the text corpus is not scoring memory
    ids = calibration_batches(tok, cfg.calibration, cfg.n_samples, cfg.seqlen, cfg.seed)
    pruner.calibration_batches = lambda *a, **k: ids
    with torch.no_grad():  # fault every weight page in, and run the kernels once, so the delta is scoring only
        sum(float(p.sum()) for p in model.parameters())
        model(input_ids=torch.tensor([[1, 2, 3, 4]]), use_cache=False)
    base, peak, stop = rss_mib(), [0.0], threading.Event()
    peak[0] = base

    def poll():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_mib())
            time.sleep(0.002)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    details: dict = {}
    start = time.perf_counter()
    scores = compute_scores(model, tok, cfg, layouts, gran, details=details)
    seconds = time.perf_counter() - start
    stop.set()
    th.join()
    info = {"seconds": seconds, "peak_delta_mib": peak[0] - base}
    if "gate_gradient" in details:  # autograd reference, outside the measured window
        ref = autograd_gate_gradient(model, ids, cfg.batch_size, layouts, gran)
        est = details["gate_gradient"]
        cos = torch.nn.functional.cosine_similarity
        for part in ("heads", "channels"):
            a = torch.cat([getattr(e, part) for e in est])
            b = torch.cat([getattr(r, part) for r in ref])
            info[f"cos_{part}"] = float(cos(a.double(), b.double(), dim=0))
        info["passes"] = details["spsa"]["passes"]
    torch.save([(s.heads, s.channels) for s in scores], args.scores_out)
    print(json.dumps(info))


def child_args(args) -> list[str]:
    out = ["--n-samples", str(args.n_samples), "--seqlen", str(args.seqlen), "--batch-size", str(args.batch_size),
           "--spsa-scope", args.spsa_scope, "--threads", str(args.threads), "--ratios", str(args.ratios[0]),
           "--recovery-batch", str(args.recovery_batch)]
    if args.spsa_queries:
        out += ["--spsa-queries", str(args.spsa_queries)]
    return out + (["--smoke"] if args.smoke else [])


def score(args, criterion: str, seed: int, tmp: str):
    from hf_ext.structured.importance import BlockScores

    out = os.path.join(tmp, f"{criterion}-{seed}.pt")
    cmd = [sys.executable, __file__, "--score-child", criterion, "--seed", str(seed), "--scores-out", out,
           *child_args(args)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode:
        raise RuntimeError(f"scoring {criterion} (seed {seed}) failed:\n{res.stderr[-3000:]}")
    return [BlockScores(h, c) for h, c in torch.load(out)], json.loads(res.stdout.strip().splitlines()[-1])


def fmt(values: list[float], digits: int = 2) -> str:
    """mean (min-max) over seeds."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def quality(args) -> str:
    from hf_ext.common.perplexity import perplexity
    from hf_ext.structured import prune_structured
    from hf_ext.structured.recovery import lora_recover

    model, tok = load(args)
    ppl = lambda m: perplexity(m, tok, "pydocs", seqlen=args.eval_seqlen, max_tokens=args.max_tokens,  # noqa: E731
                               progress=False)
    dense = ppl(model)
    print(f"dense perplexity {dense.perplexity:.3f} over {dense.n_tokens} tokens", flush=True)
    seeds = list(range(args.seeds))
    res: dict = {}  # (ratio, criterion) -> {"before": [...], "after": [...]}
    cost: dict = {c: [] for c in args.criteria}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            for crit in args.criteria:
                if crit == "magnitude" and seed != seeds[0]:
                    continue  # uses no calibration data: one scoring stands for every seed
                scores, info = score(args, crit, seed, tmp)
                cost[crit].append(info)
                print(f"seed {seed} {crit} scored: {info}", flush=True)
                for ratio in args.ratios:
                    pruned = copy.deepcopy(model)
                    cfg = make_cfg(args, crit, ratio, seed)
                    prune_structured(pruned, tok, cfg, scores=scores)
                    before = ppl(pruned).perplexity
                    lora_recover(pruned, tok, cfg.copy(recovery_steps=args.recovery_steps, seed=RECOVERY_SEED),
                                 progress=False)
                    after = ppl(pruned).perplexity
                    row = res.setdefault((ratio, crit), {"before": [], "after": [], "achieved": cfg.achieved_ratio})
                    row["before"].append(before)
                    row["after"].append(after)
                    print(f"  ratio {ratio}: {before:.3f} -> {after:.3f} after LoRA", flush=True)
                    del pruned
    return quality_report(args, model, dense, res, cost)


def quality_report(args, model, dense, res, cost) -> str:
    mean = statistics.mean
    lines = [f"Model: {'tiny Llama (smoke)' if args.smoke else 'Gemma 3 270M'}, "
             f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters, fp32, {args.threads} threads. "
             f"Perplexity: pydocs eval split, {args.eval_seqlen}-token windows with BOS, {dense.n_tokens} predicted "
             f"tokens; dense **{dense.perplexity:.3f}**. Calibration: {args.n_samples} x {args.seqlen} tokens of the "
             f"pydocs calibration split, seeds {list(range(args.seeds))} (the same windows for every criterion of a "
             f"seed). mini_llm: spsa_scope={args.spsa_scope}, spsa_queries={args.spsa_queries or 'auto'} per unit. "
             f"Recovery: LoRA r=8 on every projection, {args.recovery_steps} steps of {args.recovery_batch} x "
             f"{args.seqlen} tokens, lr 5e-4, merged; the same windows and seed ({RECOVERY_SEED}) for every row. "
             "Ratio: fraction of all attention + MLP projection parameters removed, no block protected. Cells: mean "
             "(min-max) over seeds; magnitude uses no calibration data, so one run stands for all seeds.", "",
             "| ratio | criterion | achieved | ppl pruned | ppl + LoRA |", "|---|---|---|---|---|"]
    for (ratio, crit), row in sorted(res.items(), key=lambda kv: (kv[0][0], CRITERIA.index(kv[0][1]))):
        lines.append(f"| {ratio:.2f} | {crit} | {100 * row['achieved']:.2f} % | {fmt(row['before'])} | "
                     f"{fmt(row['after'])} |")
    lines += ["", "Scoring (each in a fresh process; mean (min-max) over seeds):", "",
              "| criterion | wall s | peak RSS delta MiB | gradient cosine with autograd (heads / channels) |",
              "|---|---|---|---|"]
    for crit, infos in cost.items():
        if not infos:
            continue
        cos = "-"
        if infos and "cos_heads" in infos[0]:
            cos = (f"{fmt([i['cos_heads'] for i in infos])} / {fmt([i['cos_channels'] for i in infos])} "
                   f"({infos[0]['passes']} passes)")
        lines.append(f"| {crit} | {fmt([i['seconds'] for i in infos], 1)} | "
                     f"{fmt([i['peak_delta_mib'] for i in infos], 0)} | {cos} |")
    lines += ["", "Findings (computed from the tables above):", ""]
    free = [c for c in GRADIENT_FREE if c in args.criteria]
    if "mini_llm" in args.criteria and free:
        for ratio in args.ratios:
            for stage, label in (("before", "before recovery"), ("after", "after LoRA")):
                best = min(free, key=lambda c: mean(res[(ratio, c)][stage]))
                m, b = res[(ratio, "mini_llm")][stage], res[(ratio, best)][stage]
                verdict = "beats" if mean(m) < mean(b) else "does not beat"
                sure = ("one seed: no spread, so the difference is not sized" if len(m) < 2 else
                        "ranges do not overlap" if max(m) < min(b) or min(m) > max(b) else "seed ranges overlap")
                lines.append(f"- {ratio:.0%}, {label}: mini_llm ({mean(m):.2f}) {verdict} the best gradient-free "
                             f"criterion, {best} ({mean(b):.2f}); {sure}.")
        mem = {c: mean(i["peak_delta_mib"] for i in cost[c]) for c in cost if cost[c]}
        if "taylor" in mem:
            lines.append(f"- Scoring memory: mini_llm {mem['mini_llm']:.0f} MiB vs taylor (backprop) "
                         f"{mem['taylor']:.0f} MiB ({mem['mini_llm'] / mem['taylor']:.2f}x); activation "
                         f"{mem.get('activation', float('nan')):.0f} MiB.")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------- speed part
def matmul_params(model) -> tuple[int, int]:
    """(block projection parameters, LM-head parameters): the weights every token multiplies."""
    from hf_ext.structured.surgery import count_prunable

    return count_prunable(model), model.get_output_embeddings().weight.numel()


def ceiling(blocks: int, head: int, removed: int) -> float:
    return (blocks + head) / (blocks - removed + head)


def default_model_ceiling(ratio: float) -> tuple[float, int, int]:
    """The default model's ceiling from its config, on the meta device (no weights read)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from hf_ext.common.models import default_model_path
    from hf_ext.structured import StructuredPruningConfig
    from hf_ext.structured.pruner import plan_for

    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(default_model_path()))
    blocks, head = matmul_params(meta)
    _, _, plan = plan_for(meta, StructuredPruningConfig(ratio=ratio, criterion="magnitude"))
    return ceiling(blocks, head, plan.removed_params), blocks, head


@torch.no_grad()
def tokens_per_second(model, prefill_ids, decode_ids, new_tokens: int) -> tuple[float, float]:
    start = time.perf_counter()
    model(input_ids=prefill_ids, use_cache=False)
    prefill = prefill_ids.numel() / (time.perf_counter() - start)
    start = time.perf_counter()
    out = model.generate(input_ids=decode_ids, attention_mask=torch.ones_like(decode_ids), max_new_tokens=new_tokens,
                         min_new_tokens=new_tokens, do_sample=False)
    return prefill, (out.shape[1] - decode_ids.shape[1]) / (time.perf_counter() - start)


def speed(args) -> str:
    from transformers import LlamaConfig, LlamaForCausalLM

    from hf_ext.structured import prune_structured

    torch.set_num_threads(args.threads)
    shape = SPEED_SHAPES["smoke" if args.smoke else args.speed_model]
    config = LlamaConfig(vocab_size=32000, max_position_embeddings=2048, tie_word_embeddings=False, **shape)
    torch.manual_seed(0)
    dense = LlamaForCausalLM(config).eval()
    dense.generation_config.pad_token_id = 0
    pruned = copy.deepcopy(dense)
    prune_structured(pruned, None, make_cfg(args, "magnitude", args.speed_ratio, 0))  # speed depends on shapes only
    removed = pruned.hf_quantizer.report.plan.removed_params
    g = torch.Generator().manual_seed(0)
    prefill_ids = torch.randint(3, 32000, (1, args.prefill_tokens), generator=g)
    decode_ids = prefill_ids[:, :64]
    models = {"dense": dense, "pruned": pruned}
    runs: dict = {k: [] for k in models}
    for m in models.values():  # warm-up
        tokens_per_second(m, prefill_ids[:, :16], decode_ids[:, :8], 2)
    for _ in range(args.rounds):  # interleaved so that a load change hits both alike
        for k, m in models.items():
            runs[k].append(tokens_per_second(m, prefill_ids, decode_ids, args.new_tokens))
    blocks, head = matmul_params(dense)
    ceil = ceiling(blocks, head, removed)
    med = {k: [statistics.median(r[i] for r in v) for i in range(2)] for k, v in runs.items()}
    span = lambda k, i: f"{min(r[i] for r in runs[k]):.1f}-{max(r[i] for r in runs[k]):.1f}"  # noqa: E731
    n_params = {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()}
    lines = [f"Model: random-weight Llama-shaped ({', '.join(f'{k}={v}' for k, v in shape.items())}, vocabulary "
             f"32,000, untied head), {n_params['dense'] / 1e9:.3f} B parameters, fp32, {args.threads} threads. Pruned: "
             f"{args.speed_ratio:.0%} of the block projections removed (magnitude; speed depends only on the "
             f"shapes). Prefill: one forward of {args.prefill_tokens} tokens; decode: greedy generate of "
             f"{args.new_tokens} new tokens after a 64-token prompt (KV cache). {args.rounds} rounds, dense and "
             "pruned interleaved; median (min-max).", "",
             "| model | params (B) | prefill tok/s | decode tok/s |", "|---|---|---|---|"]
    for k in models:
        rel = lambda i, k=k: "" if k == "dense" else f" ({med[k][i] / med['dense'][i]:.2f}x)"  # noqa: E731
        lines.append(f"| {k} | {n_params[k] / 1e9:.3f} | {med[k][0]:.1f} ({span(k, 0)}){rel(0)} | "
                     f"{med[k][1]:.2f} ({span(k, 1)}){rel(1)} |")
    pf, dc = (med["pruned"][i] / med["dense"][i] for i in range(2))
    lines += ["", "Ceiling of block pruning = matmul parameters per token, dense / pruned (block projections + LM "
              "head; attention-score FLOPs, which grow with the context, left out):", "",
              f"- this model: ({blocks / 1e6:.0f} M + {head / 1e6:.1f} M head) at {args.speed_ratio:.0%} removed: "
              f"**{ceil:.3f}x**; measured prefill {pf:.2f}x ({'meets' if pf >= 1.2 else 'misses'} our 1.2x bar), "
              f"decode {dc:.2f}x ({'meets' if dc >= 1.2 else 'misses'} it)."]
    c, b, h = default_model_ceiling(args.speed_ratio)
    lines.append(f"- the default model, Gemma 3 270M: ({b / 1e6:.0f} M in blocks + {h / 1e6:.0f} M in the "
                     f"262k-token LM head) at {args.speed_ratio:.0%} removed: **{c:.3f}x** at most, whatever the "
                     "criterion: its LM head is most of the work per token.")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=("all", "quality", "speed"), default="all")
    p.add_argument("--smoke", action="store_true", help="tiny models, about a minute, written to benchmarks/out/")
    p.add_argument("--ratios", type=float, nargs="+", default=[0.2, 0.35])
    p.add_argument("--criteria", nargs="+", default=list(CRITERIA), choices=CRITERIA)
    p.add_argument("--seeds", type=int, default=3, help="calibration seeds 0..N-1")
    p.add_argument("--n-samples", type=int, default=8)
    p.add_argument("--seqlen", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--spsa-scope", default="type")
    p.add_argument("--spsa-queries", type=int, default=1,
                   help="mini_llm queries per unit (0: the library's automatic count, hours on this CPU)")
    p.add_argument("--recovery-steps", type=int, default=12)
    p.add_argument("--recovery-batch", type=int, default=1)
    p.add_argument("--max-tokens", type=int, default=8176, help="predicted evaluation tokens")
    p.add_argument("--eval-seqlen", type=int, default=512)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--speed-model", choices=("1.1b",), default="1.1b")
    p.add_argument("--speed-ratio", type=float, default=0.2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--prefill-tokens", type=int, default=256)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--score-child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--scores-out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.spsa_queries = args.spsa_queries or None
    if args.smoke:
        args.max_tokens, args.eval_seqlen, args.n_samples, args.seqlen = 252, 64, 4, 32
        args.recovery_steps, args.prefill_tokens, args.new_tokens, args.seeds = 4, 32, 4, min(args.seeds, 2)
        _report.RESULTS_DIR = ROOT / "benchmarks" / "out"
    if args.score_child:
        return score_child(args)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    if args.part in ("all", "quality"):
        body = quality(args)
        path = _report.write_section("structured", "Structured pruning (MINI-LLM): quality and scoring cost", body,
                                     packages=("peft",))
        print(body, f"\nwritten to {path} ({(time.perf_counter() - start) / 60:.1f} min so far)", flush=True)
    if args.part in ("all", "speed"):
        body = speed(args)
        path = _report.write_section("structured_speed", "Structured pruning: tokens/s, dense vs pruned", body)
        print(body, f"\nwritten to {path}", flush=True)
    print(f"total {(time.perf_counter() - start) / 60:.1f} min")


if __name__ == "__main__":
    main()
