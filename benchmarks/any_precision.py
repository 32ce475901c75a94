"""Any-precision benchmark: one 3..8-bit checkpoint vs dedicated k-bit models and RTN, bits, memory, speed.

    .venv/bin/python benchmarks/any_precision.py            # Gemma 3 270M, 16k evaluation tokens (estimate below)
    .venv/bin/python benchmarks/any_precision.py --eval-tokens 2044 --no-gptq   # quick look, about 6 min
    .venv/bin/python benchmarks/any_precision.py --smoke    # tiny random model, under 2 minutes, to benchmarks/out/

One process, one Fisher pass (``--n-samples`` x 512 tokens of pydocs), one evaluation (pydocs eval, 512-token
windows, BOS first, ``--eval-tokens`` predicted tokens) for every row of the table:

* the any-precision views 3..8 of ONE checkpoint (seed k-means + exact-split upscaling);
* dedicated k-bit models: the same solver (greedy k-means++ + Lloyd + empty-cluster re-seeding, same Fisher
  weights, same seed) run directly at k bits;
* round-to-nearest group-wise k-bit (``common.quant.fake_quantize``, min-max asymmetric, ``--rtn-group``);
* the same checkpoint with 8-bit tables (``lut_dtype="int8"``, same solver and Fisher weights) at 3 / 4 / 8 bits;
* GPTQ W4 and W3, group 128 (llm-compressor 0.14 preset schemes ``W4A16`` / ``W3A16``, symmetric), in its own venv
  ``.venv-llmc`` through ``benchmarks/llmc_baseline.py`` (``_ap_gptq.py``): same model folder, same calibration
  windows as the Fisher pass, the same evaluator on the same tokens; a dense row there must reproduce the dense
  perplexity here (checked and reported). The default run creates the venv when it is missing (pip, minutes);
  ``--smoke`` runs it on the tiny model only when the venv exists, ``--no-gptq`` skips it;
* bits per weight counted from the bytes each format needs: planes + fp16 tables (any-precision at k: k planes and
  the k-bit table; dedicated: k-bit codes and its 2^k-entry table per row), codes + fp16 scale and zero per group
  (RTN), codes + fp16 scale per group (GPTQ, symmetric: no zero point stored).

Runtime of the default run on the idle 2-core machine (estimate from the last published run, 5.4 min at 2,044
tokens): about 3.6 min of Fisher, quantization, decode rounds and memory probes; 22 perplexity passes here and 3 in
the GPTQ subprocess over 33 windows of 512 tokens (about 1.3-1.5 s a window with 2 threads, as the Fisher pass's
forward + backward suggests): about 19 min; llm-compressor's import, loads and two GPTQ passes about 3 min: about
26 min in all (22-32). Creating ``.venv-llmc`` when it is missing adds several minutes of pip.

Then resident memory and greedy decode tokens/s at 3 / 4 / 8 bits and dense: decode interleaved in ``--rounds``
rounds (median and spread); resident bytes from each variant loaded alone in a fresh subprocess (process RSS after
a generate, and the model's own parameters + buffers + caches). Finally the paper's size bar on an OPT-6.7B-shaped
4096 x 4096 layer. Every finding is computed from the data gathered here.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _report  # noqa: E402
from _ap_gptq import run_gptq, venv_ready  # noqa: E402
from _ap_memory import probe, size_bar  # noqa: E402

from hf_ext.any_precision import AnyPrecisionConfig, compute_fisher, memory_report, quantize  # noqa: E402,E501
from hf_ext.any_precision.model import any_precision_layers, non_quantized_nbytes  # noqa: E402
from hf_ext.any_precision.quantizer import checkpoint_file_size, target_linears  # noqa: E402
from hf_ext.any_precision.seed import weighted_kmeans  # noqa: E402
from hf_ext.any_precision.storage import STORAGE_DTYPES, stored_non_quantized_nbytes  # noqa: E402
from hf_ext.common.data import load_text, tokenize_stream  # noqa: E402
from hf_ext.common.models import load_model, tiny_model  # noqa: E402
from hf_ext.common.perplexity import perplexity  # noqa: E402
from hf_ext.common.quant import fake_quantize  # noqa: E402

MIB = 2**20
SPEED_WIDTHS = (3, 4, 8)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def ppl(model, tok, args) -> float:
    return perplexity(model, tok, "pydocs", seqlen=args.seqlen, max_tokens=args.eval_tokens,
                      progress=False).perplexity


@torch.no_grad()
def decode_tps(model, tok, prompt_ids, new_tokens: int) -> float:
    start = time.perf_counter()
    out = model.generate(prompt_ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                         pad_token_id=tok.pad_token_id)
    return (out.shape[1] - prompt_ids.shape[1]) / (time.perf_counter() - start)


@torch.no_grad()
def set_weights(targets, weights) -> None:
    for name, lin in targets.items():
        lin.weight.copy_(weights[name])


def weighted_bits(targets, bits_of_row) -> float:
    """Bits per quantized weight, over all target linears: ``bits_of_row(in_features)`` per weight of a row."""
    n = sum(m.weight.numel() for m in targets.values())
    return sum(m.weight.numel() * bits_of_row(m.in_features) for m in targets.values()) / n


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default")
    p.add_argument("--smoke", action="store_true", help="tiny random model, tiny sizes, results to benchmarks/out/")
    p.add_argument("--seed-bits", type=int, default=3)
    p.add_argument("--max-bits", type=int, default=8)
    p.add_argument("--n-samples", type=int, default=4, help="calibration windows (one backward each)")
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--eval-tokens", type=int, default=16384,
                   help="predicted tokens per perplexity, whole windows (default 16384: 33 windows of 512, the "
                   "issue's >= 16k)")
    p.add_argument("--rtn-group", type=int, default=128)
    p.add_argument("--decode-tokens", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no-gptq", action="store_true", help="skip the llm-compressor GPTQ rows")
    p.add_argument("--gptq-timeout-min", type=float, default=60.0)
    args = p.parse_args()
    if args.smoke:
        args.n_samples, args.seqlen, args.eval_tokens, args.decode_tokens, args.rtn_group = 2, 64, 252, 4, 32
        _report.RESULTS_DIR = Path(__file__).resolve().parent / "out"
        if not args.no_gptq and not venv_ready():
            log("smoke: .venv-llmc is missing, so the GPTQ rows are skipped (create it with "
                "`python benchmarks/llmc_baseline.py --setup-only`)")
            args.no_gptq = True
    torch.manual_seed(0)
    t0 = time.perf_counter()
    widths = list(range(args.seed_bits, args.max_bits + 1))
    speed_widths = [w for w in SPEED_WIDTHS if w in widths]

    work = tempfile.TemporaryDirectory()
    if args.smoke:
        model, tok = tiny_model("llama", hidden_size=128, intermediate_size=256)  # GPTQ groups of 128 columns
        dense_path = str(Path(work.name) / "dense")
        model.save_pretrained(dense_path)
        tok.save_pretrained(dense_path)
        model_name = "tiny random llama (smoke: numbers meaningless)"
    else:
        model, tok = load_model(args.model)
        dense_path, model_name = args.model, "Gemma 3 270M" if args.model == "default" else args.model
    cfg = AnyPrecisionConfig(seed_bits=args.seed_bits, max_bits=args.max_bits, n_samples=args.n_samples,
                             seqlen=args.seqlen)
    targets = target_linears(model, None)
    n_weights = sum(m.weight.numel() for m in targets.values())
    log(f"model: {len(targets)} decoder linears, {n_weights / 1e6:.2f} M weights")
    prompt = tokenize_stream(tok, load_text("pydocs", "eval"), max_tokens=64)[:63]
    prompt_ids = torch.cat([torch.tensor([tok.bos_token_id]), prompt]).unsqueeze(0)

    dense_res = perplexity(model, tok, "pydocs", seqlen=args.seqlen, max_tokens=args.eval_tokens, progress=False)
    dense_ppl, dense_protocol = dense_res.perplexity, dense_res.protocol
    log(f"dense ppl {dense_ppl:.3f}")
    start = time.perf_counter()
    fisher = compute_fisher(model, tok, cfg, progress=False)
    fisher_s = time.perf_counter() - start
    log(f"Fisher: {args.n_samples} x {args.seqlen} tokens in {fisher_s:.0f} s")
    originals = {n: m.weight.detach().clone() for n, m in targets.items()}
    # The unquantized parts as every any-precision checkpoint stores them (non_quantized_dtype), for the dedicated
    # and RTN models too, so those columns differ from the any-precision one only in the decoder linears.
    store = STORAGE_DTYPES.get(cfg.non_quantized_dtype)
    target_ids = {id(m.weight) for m in targets.values()}
    with torch.no_grad():
        for t in model.state_dict(keep_vars=True).values():
            if store is not None and t.is_floating_point() and id(t) not in target_ids:
                t.copy_(t.to(store).to(t.dtype))

    dedicated, dedicated_s, rtn = {}, {}, {}
    for k in widths:
        start = time.perf_counter()
        with torch.no_grad():
            for name, lin in targets.items():
                codes, lut = weighted_kmeans(originals[name], fisher[name], k, cfg.kmeans_iterations, cfg.seed)
                lin.weight.copy_(lut.half().float().gather(1, codes))  # fp16 tables, as stored
        dedicated_s[k] = time.perf_counter() - start
        dedicated[k] = ppl(model, tok, args)
        with torch.no_grad():
            for name, lin in targets.items():
                lin.weight.copy_(fake_quantize(originals[name], k, args.rtn_group))
        rtn[k] = ppl(model, tok, args)
        log(f"{k} bits: dedicated ppl {dedicated[k]:.3f} ({dedicated_s[k]:.0f} s), RTN ppl {rtn[k]:.3f}")
    set_weights(targets, originals)
    del originals

    start = time.perf_counter()
    quantize(model, tok, cfg, fisher=fisher)
    ap_s = time.perf_counter() - start
    log(f"any-precision {args.seed_bits}..{args.max_bits} built in {ap_s:.0f} s")
    mem = memory_report(model)
    anyprec = {}
    for k in widths:
        model.set_precision(k)
        anyprec[k] = ppl(model, tok, args)
        log(f"{k} bits: any-precision ppl {anyprec[k]:.3f}")
    ap_path = str(Path(work.name) / "anyprec")
    model.save_pretrained(ap_path)
    tok.save_pretrained(ap_path)
    ckpt_bytes = checkpoint_file_size(ap_path)
    rest_stored = stored_non_quantized_nbytes(model, cfg.non_quantized_dtype)
    layers = any_precision_layers(model)
    lin_all = sum(m.stored_nbytes() for m in layers.values())
    rest = non_quantized_nbytes(model)

    # 8-bit tables (lut_dtype="int8"): the same solver and Fisher weights, from a fresh float copy
    int8_widths = [w for w in SPEED_WIDTHS if w in widths]
    q8_model, _ = load_model(dense_path)
    quantize(q8_model, tok, cfg.copy(lut_dtype="int8"), fisher=fisher)
    del fisher
    q8_mem = memory_report(q8_model)
    q8 = {}
    for k in int8_widths:
        q8_model.set_precision(k)
        q8[k] = ppl(q8_model, tok, args)
        log(f"{k} bits: any-precision with int8 tables ppl {q8[k]:.3f}")
    q8_lin_all = sum(m.stored_nbytes() for m in any_precision_layers(q8_model).values())
    q8_path = str(Path(work.name) / "anyprec_int8")
    q8_model.save_pretrained(q8_path)
    q8_ckpt_bytes = checkpoint_file_size(q8_path)
    del q8_model

    # GPTQ (llm-compressor, own venv): same model folder, calibration windows and evaluation tokens
    gptq, gptq_status = {}, "not run (--no-gptq)"
    if not args.no_gptq:
        log("GPTQ W4 / W3 g128 through llm-compressor (subprocess; creates .venv-llmc first if missing)")
        gptq, gptq_status = run_gptq(dense_path, args.n_samples, args.seqlen, cfg.seed, args.eval_tokens,
                                     torch.get_num_threads(), build_venv=not args.smoke,
                                     timeout_s=args.gptq_timeout_min * 60)
        log(f"GPTQ: {gptq_status}; " + ", ".join(f"{k}: {r['ppl']:.3f}" for k, r in gptq.items()))
        if args.smoke and "dense" in gptq and gptq["dense"]["ppl"] != dense_ppl:
            raise SystemExit(f"smoke: the GPTQ subprocess's dense perplexity {gptq['dense']['ppl']!r} differs from "
                             f"ours {dense_ppl!r}: it does not score the same tokens")

    # decode speed: dense and the any-precision model at each width and CPU kernel, interleaved
    dense_model, _ = load_model(dense_path)
    tps = {"dense": [], **{k: [] for k in speed_widths}, **{f"{k} gemv": [] for k in speed_widths}}
    with torch.no_grad():
        dense_model.generate(prompt_ids, max_new_tokens=2, do_sample=False, pad_token_id=tok.pad_token_id)
        model.generate(prompt_ids, max_new_tokens=2, do_sample=False, pad_token_id=tok.pad_token_id)
    for r in range(args.rounds):
        tps["dense"].append(decode_tps(dense_model, tok, prompt_ids, args.decode_tokens))
        for k in speed_widths:
            model.set_precision(k)
            for kernel, key in (("blocked", k), ("gemv", f"{k} gemv")):
                for layer in layers.values():
                    layer.cpu_kernel = kernel
                tps[key].append(decode_tps(model, tok, prompt_ids, args.decode_tokens))
        log(f"round {r + 1}: " + ", ".join(f"{k}: {v[-1]:.2f}" for k, v in tps.items()))
    del dense_model

    # resident memory: each variant alone in a fresh process
    probes = {"dense": probe(dense_path, "dense"), **{k: probe(ap_path, str(k)) for k in speed_widths}}
    log("probes: " + ", ".join(f"{k}: {v['rss'] / MIB:.0f} MiB" for k, v in probes.items()))
    dense_lin = 4 * n_weights
    bar = size_bar()
    bar8 = size_bar(lut_dtype=torch.uint8)
    own_bar = size_bar(cols=max(m.in_features for m in layers.values()),
                       rows=max(m.out_features for m in layers.values()), lo=args.seed_bits, hi=args.max_bits)
    total_s = time.perf_counter() - t0
    work.cleanup()

    # ------------------------------------------------------------------------------------------------ report
    head = ["bits", "any-precision (one checkpoint)", "vs dedicated", "dedicated k-bit (same solver)",
            f"RTN g{args.rtn_group}", "GPTQ g128 (llm-compressor)", "any-precision, int8 tables",
            "bits/weight: any-precision", "dedicated", "RTN", "GPTQ", "int8 tables"]
    rows = []
    for k in widths:
        ded_bits = weighted_bits(targets, lambda cols, k=k: k + 16 * 2**k / cols)
        g = gptq.get(k)
        rows.append([k, anyprec[k], f"{100 * (anyprec[k] / dedicated[k] - 1):+.1f} %", dedicated[k], rtn[k],
                     g["ppl"] if g else "", q8.get(k, ""), f"{mem[k]['bits_per_weight']:.2f}", f"{ded_bits:.2f}",
                     f"{k + 32 / args.rtn_group:.2f}", f"{g['bits_per_weight']:.3f}" if g else "",
                     f"{q8_mem[k]['bits_per_weight']:.2f}" if k in q8 else ""])
    dense_llmc = gptq["dense"]["ppl"] if "dense" in gptq else ""
    rows.append(["dense fp32", dense_ppl, "", "", "", dense_llmc, "", "32", "", "", "32" if dense_llmc else "", ""])
    within = [k for k in widths if anyprec[k] <= 1.02 * dedicated[k]]
    findings = [
        f"Any-precision views within 2 % perplexity of the dedicated model of their width: {within or 'none'} "
        f"of {widths}.",
        "Best at each width: " + ", ".join(
            f"{k}: " + min((("any-precision", anyprec[k]), ("dedicated", dedicated[k]), ("RTN", rtn[k]))
                           + ((("GPTQ", gptq[k]["ppl"]),) if k in gptq else ()), key=lambda x: x[1])[0]
            for k in widths) + ".",
    ]
    findings.append("int8 tables vs fp16 tables (perplexity change; bits per weight): " + ", ".join(
        f"{k} bits {100 * (q8[k] / anyprec[k] - 1):+.2f} % ({mem[k]['bits_per_weight']:.2f} -> "
        f"{q8_mem[k]['bits_per_weight']:.2f})" for k in q8) + f"; linears of all widths {lin_all / MIB:.1f} -> "
        f"{q8_lin_all / MIB:.1f} MiB; size bar with int8 tables {bar8['ratio']:.3f}x on 4096 x 4096.")
    if 4 in gptq and 4 in anyprec:
        findings.append(f"4-bit view at or below GPTQ W4 g128: {anyprec[4]:.3f} vs {gptq[4]['ppl']:.3f} "
                        f"({'met' if anyprec[4] <= gptq[4]['ppl'] else 'not met'}; bits/weight "
                        f"{mem[4]['bits_per_weight']:.2f} vs {gptq[4]['bits_per_weight']:.3f}).")
    else:
        findings.append(f"4-bit view vs GPTQ W4 g128: not measured (GPTQ {gptq_status}).")
    if "dense" in gptq:
        d = gptq["dense"]
        findings.append(f"Same evaluation tokens in the GPTQ subprocess: its dense perplexity {d['ppl']:.6f} vs "
                        f"{dense_ppl:.6f} here (relative difference {abs(d['ppl'] / dense_ppl - 1):.1e}; protocol "
                        f"{'identical' if d['eval_protocol'] == dense_protocol else 'DIFFERENT: ' + d['eval_protocol']}"
                        f"; llm-compressor pins transformers {d['versions']['transformers']}).")
    speed_rows = [["dense fp32", spread(tps["dense"]), "1.00x", f"{probes['dense']['rss'] / MIB:.0f}",
                   f"{probes['dense']['own'] / MIB:.1f}", f"{dense_lin / MIB:.1f}"]]
    for k in speed_widths:
        lin_k = sum(m.nbytes(k) for m in layers.values()) + max(m.workspace_nbytes() for m in layers.values())
        speed_rows.append([f"any-precision {k}-bit, blocked (default)", spread(tps[k]),
                           f"{statistics.median(tps[k]) / statistics.median(tps['dense']):.2f}x",
                           f"{probes[k]['rss'] / MIB:.0f}", f"{probes[k]['own'] / MIB:.1f}", f"{lin_k / MIB:.1f}"])
        g = tps[f"{k} gemv"]
        speed_rows.append([f"any-precision {k}-bit, cpu_kernel='gemv'", spread(g),
                           f"{statistics.median(g) / statistics.median(tps['dense']):.2f}x", "same", "same", "same"])
    if 4 in speed_widths:
        lin4 = sum(m.nbytes(4) for m in layers.values()) + max(m.workspace_nbytes() for m in layers.values())
        ratio_mem = lin4 / dense_lin
        best4 = max(statistics.median(tps[4]), statistics.median(tps["4 gemv"]))
        ratio_tps = best4 / statistics.median(tps["dense"])
        findings.append(f"CPU bar at 4 bits (resident decoder-linear bytes <= 0.2x fp32 dense, tokens/s >= 0.5x "
                        f"dense): {ratio_mem:.3f}x bytes ({'met' if ratio_mem <= 0.2 else 'not met'}), "
                        f"{ratio_tps:.2f}x tokens/s with the faster CPU kernel "
                        f"({'met' if ratio_tps >= 0.5 else 'not met'}).")
    findings.append(f"Size bar (linears of a 3..8 checkpoint <= 1.25x a single 8-bit model of the same format, "
                    f"4096 x 4096 layer): {bar['ratio']:.3f}x ({'met' if bar['ratio'] <= 1.25 else 'not met'}); on "
                    f"this model's widest layer shape: {own_bar['ratio']:.3f}x "
                    f"({'met' if own_bar['ratio'] <= 1.25 else 'not met'}).")
    gptq_note = (f"GPTQ: llm-compressor {gptq['dense']['versions']['llmcompressor'] if 'dense' in gptq else ''} "
                 "oneshot (preset W4A16 / W3A16: symmetric int, group 128, lm_head not quantized) on the same "
                 f"calibration windows; {gptq_status}")
    if gptq:
        gptq_note += (f"; the GPTQ model keeps fp32 embeddings, the other quantized columns the "
                      f"{cfg.non_quantized_dtype}-rounded ones every checkpoint stores; oneshot wall s: "
                      + ", ".join(f"W{k} {gptq[k]['seconds']:.0f}" for k in (4, 3) if k in gptq))
    gptq_note += "."
    body = "\n".join([
        f"Model: {model_name}: {len(targets)} decoder linears, {n_weights / 1e6:.1f} M weights quantized; "
        f"embeddings, LM head and norms stay unquantized, stored as {cfg.non_quantized_dtype} (rounded so in memory "
        "too; computed in fp32).  ",
        f"Calibration: {args.n_samples} x {args.seqlen} tokens of pydocs, Fisher = summed squared gradients "
        f"({fisher_s:.0f} s), shared by every quantized row. Perplexity: pydocs eval, {args.seqlen}-token windows, "
        f"BOS first: {dense_protocol}. Total {total_s / 60:.1f} min.",
        gptq_note,
        "",
        "### Findings", "", *[f"- {f}" for f in findings], "",
        "### Perplexity and bits per weight", "",
        _report.table(head, rows), "",
        f"Quantization time: any-precision {ap_s:.0f} s for all {len(widths)} widths; dedicated per width: "
        + ", ".join(f"{k}: {dedicated_s[k]:.0f} s" for k in widths) + ". Bits per weight include the fp16 tables "
        "(any-precision, dedicated), the fp16 scale and zero of each group (RTN) or the fp16 scale of each group "
        "(GPTQ, symmetric: no zero point stored; counted from the scales llm-compressor produced).",
        "",
        "### Resident memory and decode speed", "",
        f"Greedy decode of {args.decode_tokens} tokens after a 64-token prompt, batch 1, {args.rounds} rounds "
        "interleaved (median and range). Any-precision runs memory-honest (no dense cache): the default blocked path "
        "(row blocks dequantized into one shared buffer per forward, bit-identical to a dense cache) or the opt-in "
        "numba bitplane GEMV (`cpu_kernel='gemv'`, float32-close). RSS: each variant loaded alone in a fresh process, "
        "after a short generate (includes the Python / torch runtime).", "",
        _report.table(["variant", "decode tokens/s", "vs dense", "process RSS (MiB)",
                       "params + buffers + caches (MiB)", "decoder linears resident (MiB)"], speed_rows), "",
        "### Sizes", "",
        _report.table(["what", "MiB"], [
            [f"all {args.seed_bits}..{args.max_bits} widths: quantized linears in memory", f"{lin_all / MIB:.1f}"],
            ["rest of the model (embeddings, LM head, norms), in memory (compute dtype)", f"{rest / MIB:.1f}"],
            [f"rest of the model in the checkpoint (non_quantized_dtype={cfg.non_quantized_dtype})",
             f"{rest_stored / MIB:.1f}"],
            ["checkpoint file", f"{ckpt_bytes / MIB:.1f}"],
            [f"all {args.seed_bits}..{args.max_bits} widths with int8 tables (lut_dtype='int8'): linears / checkpoint "
             "file", f"{q8_lin_all / MIB:.1f} / {q8_ckpt_bytes / MIB:.1f}"],
            ["fp32 decoder linears", f"{dense_lin / MIB:.1f}"],
            [f"4096 x 4096 layer, {args.seed_bits}..{args.max_bits} widths / single 8-bit",
             f"{bar['all'] / MIB:.2f} / {bar['single'] / MIB:.2f}"],
            ["the same with int8 tables", f"{bar8['all'] / MIB:.2f} / {bar8['single'] / MIB:.2f}"],
        ]),
    ])
    path = _report.write_section("any_precision", "Any-precision LLM: one checkpoint, every bit width", body,
                                 packages=("numba",))
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
