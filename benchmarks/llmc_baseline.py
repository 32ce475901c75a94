"""Peer baseline: llm-compressor 0.14.0.1 (SparseGPT, Wanda, GPTQ, OWL) on the default model, measured with
hf-ext's own calibration data and perplexity.

llm-compressor pins transformers 5.15-5.17 while hf-ext uses 5.24, so this script keeps it in its own virtual
environment: run it with any Python (e.g. ``.venv/bin/python``); it creates ``.venv-llmc/`` in the repo root once
(``pip install torch==2.13.0`` first, so the local CPU wheel is used, then ``llmcompressor==0.14.0.1`` with the
transformers it pins and torch held by a constraint, then ``pip install --no-deps -e .`` for hf_ext) and re-executes
itself inside it. ``$HF_EXT_LLMC_VENV`` overrides the venv location. Inside, ``hf_ext.common`` provides the model
path, the calibration windows and THE perplexity; ``hf_ext/__init__`` is bypassed (see ``_import_hf_ext_common``) so
the capability registrations written for transformers 5.24 are never imported under 5.17.

Invocation (what ``benchmarks/compression.py`` runs through ``subprocess``)::

    .venv/bin/python benchmarks/llmc_baseline.py --grid sparsegpt:0.5,wanda:0.5,gptq:w4,wanda:0.7:owl \\
        --n-samples 16 --seqlen 256 --max-tokens 8176 --threads 1 --json OUT.json [--md REPORT.md]

``--threads 1`` on a shared CPU: with 2 torch threads on an oversubscribed machine GPTQ's per-column loop and the
evaluation slowed down more than 10x here; with 1 thread the oneshot CPU seconds matched the unloaded wall times.

``--model DIR`` evaluates another local model folder (tests use a tiny one); default: hf-ext's Gemma 3 270M copy.

or one setting: ``--method sparsegpt|wanda|gptq|sparsegpt+gptq|dense --sparsity 0.5 --bits 4 --profile uniform``.
Grid entries are ``METHOD[:SPARSITY][:wBITS][:PROFILE]``, comma-separated, e.g. ``dense``, ``sparsegpt:0.7``,
``wanda:0.7:owl``, ``gptq:w3`` (preset ``W3A16``), ``sparsegpt+gptq:0.7:w4``, ``sparsegpt+rtn:0.7:w4`` (SparseGPT, then
``QuantizationModifier`` W{bits}A16: plain rounding that keeps the mask). ``--seed`` picks the calibration windows.
Each setting reloads the dense model from disk (oneshot
rewrites it in place); the venv, tokenizer and calibration data are built once. Progress and llm-compressor's logs go
to stderr; stdout gets only the markdown table. Exit status 0 when every setting ran, 1 when any failed (the JSON is
still written, the failed entries carry ``error``), 2 for bad arguments.

JSON (``--json``, written atomically): a list with one dict per setting, in grid order::

    {"method": "sparsegpt", "sparsity": 0.5, "bits": null, "profile": "uniform",
     "ppl": 16.8, "seconds": 50.1,            # perplexity; oneshot wall time in s (0 for dense)
     "cpu_seconds": 95.0,                      # CPU time of this process during oneshot (less load-sensitive)
     "zero_fraction": 0.5,                     # exact zeros / weights over the decoder linears (q,k,v,o,gate,up,down)
     "bits_per_weight": null | 4.125,          # quantized rows: codes + fp16 scale per group (+ zero if asymmetric)
     "layer_zero_fractions": [0.5, ...],       # the same per decoder block
     "dense_zero_fraction": 0.0455,            # the same count before oneshot (the GGUF grid leaves 4.55 % zeros)
     "n_samples": 16, "seqlen": 256,           # calibration windows (hf_ext calibration_batches, "pydocs", seed 0)
     "eval_tokens": 8176, "eval_seqlen": 512, "eval_seconds": 40.2, "eval_protocol": "16 windows of 512 ...",
     "layer_sparsities": null | [per decoder layer, OWL only], "owl_m": 5.0 | null, "owl_lmbda": 0.08 | null,
     "recipe": "SparseGPTModifier(sparsity=0.5, ...)", "error": null | "ExceptionType: message",
     "versions": {"torch": ..., "transformers": ..., "llmcompressor": ..., "compressed-tensors": ...}}

Settings: ``lm_head`` (tied to the embeddings on Gemma 3) is never compressed: ``ignore=["re:.*lm_head"]``; the bare
``"lm_head"`` does NOT match in 0.14.0.1's sparsity modifiers, which name each target ``"<name>."``. GPTQ uses the
preset schemes ``W{bits}A16`` (symmetric int, group 128). ``sparsegpt+gptq`` is one recipe, SparseGPT then GPTQ
(GPTQ refills some pruned weights: read ``zero_fraction``). Other arguments stay at llm-compressor's defaults.

OWL: ``sparsity_profile="owl"`` fails in 0.14.0.1 (``profile="owl-native"`` reproduces it). Two bugs: its
``_infer_owl_layer_sparsity`` runs a calibration pass from inside ``on_initialize``, whose lifecycle events reach the
not-yet-initialized modifier ("Cannot invoke event before initializing"); and the per-layer dict it returns would then
be applied whole to every module, since ``on_calibration_start`` only indexes a ``list``. Our fix, from our side and
without patching anything: ``profile="owl"`` computes the OWL layer sparsities here with llm-compressor's own formula
(activation norm per input column = sum over calibration samples of the sample's L2 norm; per decoder layer the
percentage of |W| * norm above ``owl_m`` * its mean; ratios scaled to [0, 2 * lambda]; sparsity = S - (ratio -
mean ratio)), from one plain forward of the dense model on the same calibration windows, and passes them as the
modifier's documented per-target ``sparsity`` list (one entry per ``Linear`` in ``named_modules`` order, which is how
0.14.0.1 indexes it). Defaults ``owl_m=5``, ``owl_lmbda=0.08`` (the OWL paper's unstructured setting).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import os
import subprocess
import sys
import time
import types
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import cpu_name  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("HF_EXT_LLMC_VENV", REPO / ".venv-llmc")).resolve()
VENV_PYTHON = VENV / "bin" / "python"
READY = VENV / ".hf_ext_llmc_ready.json"
TORCH_PIN = "torch==2.13.0"
LLMC_PIN = "llmcompressor==0.14.0.1"
METHODS = ("dense", "sparsegpt", "wanda", "gptq", "sparsegpt+gptq", "sparsegpt+rtn")
PROFILES = ("uniform", "owl", "owl-native")
VERSION_PACKAGES = ("torch", "transformers", "llmcompressor", "compressed-tensors", "datasets")


def _log(msg: str) -> None:
    print(f"[llmc_baseline] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ venv bootstrap


def _pip(*args: str) -> None:
    cmd = [str(VENV_PYTHON), "-m", "pip", "install", "--disable-pip-version-check", *args]
    _log("$ " + " ".join(cmd))
    subprocess.run(cmd, check=True)


def _venv_python_json(code: str) -> object:
    out = subprocess.run([str(VENV_PYTHON), "-c", code], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _missing_modules() -> list[str]:
    """Modules that hf_ext.common imports and the venv lacks (their pip names equal the module names)."""
    code = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from llmc_baseline import _import_hf_ext_common\n"
        "try:\n    _import_hf_ext_common(); print('[]')\n"
        "except ModuleNotFoundError as e:\n    print(json.dumps([e.name.split('.')[0]]))\n"
    )
    return list(_venv_python_json(code))


def ensure_venv() -> None:
    """Create ``.venv-llmc`` with the pinned torch, llm-compressor and an editable hf_ext, once."""
    if READY.is_file() and VENV_PYTHON.is_file():
        ready = json.loads(READY.read_text())
        if f"llmcompressor=={ready.get('llmcompressor')}" == LLMC_PIN and ready.get("torch", "").startswith("2.13.0"):
            return
        _log(f"{VENV} holds {ready}, not the pinned {TORCH_PIN} / {LLMC_PIN}: reinstalling")
        READY.unlink()
    if not VENV_PYTHON.is_file():
        _log(f"creating {VENV}")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    # torch first and pinned: an unpinned resolve could pull a multi-GB CUDA build instead of the local CPU wheel.
    _pip(TORCH_PIN)
    constraints = VENV / "constraints-llmc.txt"
    constraints.write_text(f"{TORCH_PIN}\n")
    _pip("-c", str(constraints), LLMC_PIN)
    _pip("--no-deps", "-e", str(REPO))
    transformers_version = _venv_python_json(
        "import json, importlib.metadata as m; print(json.dumps(m.version('transformers')))"
    )
    # Anything hf_ext.common still lacks is added without moving torch or llm-compressor's transformers.
    constraints.write_text(f"{TORCH_PIN}\ntransformers=={transformers_version}\n")
    installed: list[str] = []
    while missing := _missing_modules():
        if missing[0] in installed:
            raise RuntimeError(f"hf_ext.common still cannot import {missing[0]!r} inside {VENV}.")
        _pip("-c", str(constraints), missing[0])
        installed.append(missing[0])
    versions = _venv_python_json(
        f"import json, importlib.metadata as m; print(json.dumps({{p: m.version(p) for p in {VERSION_PACKAGES!r}}}))"
    )
    READY.write_text(json.dumps(versions, indent=1) + "\n")
    _log(f"venv ready at {VENV}: {versions}")


def _in_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV


def _import_hf_ext_common() -> types.SimpleNamespace:
    """hf_ext.common's data, perplexity, models and arch modules, without running ``hf_ext/__init__``.

    ``hf_ext/__init__`` imports every capability's quantizer registration, written for transformers 5.24; this venv
    has llm-compressor's 5.17 and needs none of them, so the package is entered through a bare module object.
    """
    if "hf_ext" not in sys.modules:
        # This checkout's hf_ext first, whatever the venv's editable install points at.
        if str(REPO) not in sys.path:
            sys.path.insert(0, str(REPO))
        spec = importlib.util.find_spec("hf_ext")
        if spec is None or not spec.submodule_search_locations:
            raise ModuleNotFoundError("hf_ext is not installed in this environment", name="hf_ext")
        pkg = types.ModuleType("hf_ext")
        pkg.__path__ = list(spec.submodule_search_locations)
        pkg.__spec__ = spec
        sys.modules["hf_ext"] = pkg
    from hf_ext.common import arch, data, models, perplexity

    return types.SimpleNamespace(arch=arch, data=data, models=models, perplexity=perplexity)


# ------------------------------------------------------------------------------------------------------ settings


def parse_setting(text: str) -> dict:
    """``METHOD[:SPARSITY][:wBITS][:PROFILE]`` -> setting dict; ValueError naming the bad part."""
    parts = [p.strip() for p in text.strip().split(":") if p.strip()]
    if not parts or parts[0] not in METHODS:
        raise ValueError(f"Unknown method in grid entry {text!r}; use one of {METHODS}.")
    setting = {"method": parts[0], "sparsity": None, "bits": None, "profile": "uniform"}
    for part in parts[1:]:
        if part in PROFILES:
            setting["profile"] = part
        elif part[0] in "wW" and part[1:].isdigit():
            setting["bits"] = int(part[1:])
        else:
            try:
                setting["sparsity"] = float(part)
            except ValueError:
                raise ValueError(f"Bad part {part!r} in grid entry {text!r} (sparsity, wBITS or a profile).") from None
    return validate_setting(setting)


def validate_setting(s: dict) -> dict:
    method, sparsity, bits, profile = s["method"], s["sparsity"], s["bits"], s["profile"]
    prunes = method in ("sparsegpt", "wanda", "sparsegpt+gptq", "sparsegpt+rtn")
    quantizes = method in ("gptq", "sparsegpt+gptq", "sparsegpt+rtn")
    if prunes and (sparsity is None or not 0.0 < sparsity < 1.0):
        raise ValueError(f"{method} needs a sparsity in (0, 1), got {sparsity}.")
    if not prunes and sparsity is not None:
        raise ValueError(f"{method} takes no sparsity, got {sparsity}.")
    if quantizes and (bits is None or not 2 <= bits <= 8):
        raise ValueError(f"{method} needs bits in 2..8, got {bits}.")
    if not quantizes and bits is not None:
        raise ValueError(f"{method} takes no bits, got {bits}.")
    if profile != "uniform" and not prunes:
        raise ValueError(f"profile {profile!r} applies to pruning methods only, not {method}.")
    return s


def setting_label(s: dict) -> str:
    out = s["method"]
    if s["sparsity"] is not None:
        out += f" {s['sparsity']:.0%}"
    if s["bits"] is not None:
        out += f" W{s['bits']}A16"
    if s["profile"] != "uniform":
        out += f" {s['profile']}"
    return out


# ------------------------------------------------------------------------------------------------------------ OWL


def owl_sparsities_from_ratios(ratios: list[float], target: float, lmbda: float) -> list[float]:
    """OWL's layer sparsities from per-layer outlier ratios, as llm-compressor 0.14 computes them.

    The ratios are scaled to [0, 2 * lmbda]; a layer's sparsity is ``target`` minus its scaled ratio's distance from
    the mean, so the sparsities average ``target`` and lie in [target - lmbda, target + lmbda].
    """
    lo, hi = min(ratios), max(ratios)
    if hi == lo:
        return [float(target)] * len(ratios)
    scaled = [(r - lo) / (hi - lo) * 2 * lmbda for r in ratios]
    mean = sum(scaled) / len(scaled)
    return [float(target - (d - mean)) for d in scaled]


def owl_outlier_ratios(model, calib, hf, owl_m: float) -> list[float]:
    """Per decoder block, the percentage of Wanda scores |W| * ||x_j|| above ``owl_m`` times their mean.

    The activation norm follows llm-compressor's ``_get_activations``: per input column, the sum over calibration
    samples of that sample's L2 norm (its constant 1/128 factor cancels in the ratio).
    """
    import torch

    linears = hf.arch.named_block_linears(model)
    norms: dict[str, torch.Tensor] = {}

    def hook(name):
        def fn(_module, args):
            x = args[0].detach().float()
            norms[name] = norms.get(name, 0) + x.pow(2).sum(dim=tuple(range(x.dim() - 1))).sqrt()

        return fn

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in linears.items()]
    try:
        with torch.no_grad():
            for i in range(calib.shape[0]):
                model(input_ids=calib[i : i + 1], use_cache=False)
    finally:
        for h in handles:
            h.remove()
    prefix = hf.arch.get_arch(model).blocks
    ratios = []
    for i in range(len(hf.arch.get_blocks(model))):
        names = [n for n in linears if n.startswith(f"{prefix}.{i}.")]
        scores = torch.cat([(linears[n].weight.detach().abs() * norms[n][None, :]).flatten() for n in names])
        ratios.append(100.0 * (scores > owl_m * scores.mean()).float().mean().item())
    return ratios


def per_target_sparsities(model, layer_sparsities: list[float], default: float, hf) -> list[float]:
    """The modifier's ``sparsity`` list: one entry per ``Linear`` in ``named_modules`` order (0.14.0.1's indexing);
    linears outside the decoder blocks (``lm_head``, ignored anyway) get ``default``."""
    from compressed_tensors.utils import match_named_modules

    prefix = hf.arch.get_arch(model).blocks + "."
    out = []
    for name, _ in match_named_modules(model, ["Linear"]):
        if name.startswith(prefix):
            out.append(layer_sparsities[int(name[len(prefix) :].split(".")[0])])
        else:
            out.append(float(default))
    return out


# -------------------------------------------------------------------------------------------------------- running

IGNORE = ["re:.*lm_head"]


def build_recipe(s: dict, model, calib, hf, owl_m: float, owl_lmbda: float) -> tuple[list, list[float] | None]:
    from llmcompressor.modifiers.pruning import SparseGPTModifier, WandaPruningModifier
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier

    recipe, layer_sparsities = [], None
    if s["method"] in ("sparsegpt", "wanda", "sparsegpt+gptq", "sparsegpt+rtn"):
        cls = WandaPruningModifier if s["method"] == "wanda" else SparseGPTModifier
        kwargs: dict = {"sparsity": s["sparsity"], "ignore": IGNORE}
        if s["profile"] == "owl-native":
            kwargs.update(sparsity_profile="owl", owl_m=owl_m, owl_lmbda=owl_lmbda)
        elif s["profile"] == "owl":
            ratios = owl_outlier_ratios(model, calib, hf, owl_m)
            layer_sparsities = owl_sparsities_from_ratios(ratios, s["sparsity"], owl_lmbda)
            kwargs["sparsity"] = per_target_sparsities(model, layer_sparsities, s["sparsity"], hf)
        recipe.append(cls(**kwargs))
    if s["method"] in ("gptq", "sparsegpt+gptq"):
        recipe.append(GPTQModifier(targets="Linear", scheme=f"W{s['bits']}A16", ignore=IGNORE))
    if s["method"] == "sparsegpt+rtn":  # plain rounding (no GPTQ update): the symmetric grid keeps every zero
        recipe.append(QuantizationModifier(targets="Linear", scheme=f"W{s['bits']}A16", ignore=IGNORE))
    return recipe, layer_sparsities


def describe_recipe(recipe: list) -> str:
    """A short, readable recipe (the modifiers' reprs hold every private field and a 127-entry OWL list)."""
    out = []
    for m in recipe:
        fields = {k: getattr(m, k) for k in ("sparsity", "scheme", "targets", "ignore") if getattr(m, k, None)}
        if isinstance(fields.get("sparsity"), list):
            fields["sparsity"] = f"<{len(fields['sparsity'])} per-Linear values>"
        if getattr(m, "sparsity_profile", None):
            fields.update(sparsity_profile=m.sparsity_profile, owl_m=m.owl_m, owl_lmbda=m.owl_lmbda)
        out.append(f"{type(m).__name__}({', '.join(f'{k}={v!r}' for k, v in fields.items())})")
    return "; ".join(out)


def layer_zero_fractions(model, hf) -> list[float]:
    """Exact-zero fraction of each decoder block's linears."""
    out = []
    for block in hf.arch.get_blocks(model):
        ws = [m.weight for m in hf.arch.block_linears(block, hf.arch.get_arch(model)).values()]
        out.append(sum(int((w == 0).sum()) for w in ws) / sum(w.numel() for w in ws))
    return out


def zero_fraction(model, hf) -> float:
    linears = hf.arch.named_block_linears(model).values()
    zeros = sum(int((m.weight == 0).sum()) for m in linears)
    return zeros / sum(m.weight.numel() for m in linears)


def quantized_bits_per_weight(model, hf) -> float | None:
    """Bits per decoder-linear weight as a packed checkpoint stores them: the codes, an fp16 scale per group and,
    for asymmetric schemes only, a zero point of the same width as the codes (symmetric zero points are not stored).
    ``None`` when no linear carries a quantization scheme (dense, pruning only)."""
    linears = hf.arch.named_block_linears(model).values()
    bits = n = 0
    for m in linears:
        scheme = getattr(m, "quantization_scheme", None)
        args = getattr(scheme, "weights", None) if scheme is not None else None
        if args is None:
            return None
        k, numel = args.num_bits, m.weight.numel()
        groups = m.weight_scale.numel()
        bits += k * numel + 16 * groups + (0 if args.symmetric else k * groups)
        n += numel
    return bits / n if n else None


def _fingerprint(weight) -> tuple[int, float]:
    return int((weight == 0).sum()), float(weight.detach().double().abs().sum())


def new_result(s: dict, args: argparse.Namespace, versions: dict) -> dict:
    """The JSON record of one setting, before it runs (a failed setting keeps these keys, with ``error`` set)."""
    return {
        **s,
        "ppl": None,
        "seconds": 0.0,
        "cpu_seconds": 0.0,
        "zero_fraction": None,
        "bits_per_weight": None,
        "dense_zero_fraction": None,
        "n_samples": args.n_samples,
        "seed": args.seed,
        "seqlen": args.seqlen,
        "eval_tokens": None,
        "eval_seqlen": args.eval_seqlen,
        "eval_seconds": None,
        "eval_protocol": None,
        "layer_sparsities": None,
        "owl_m": args.owl_m if s["profile"] != "uniform" else None,
        "owl_lmbda": args.owl_lmbda if s["profile"] != "uniform" else None,
        "recipe": None,
        "error": None,
        "layer_zero_fractions": None,
        "versions": versions,
    }


def run_setting(result: dict, ctx: types.SimpleNamespace, args: argparse.Namespace) -> dict:
    """Run one setting, filling ``result`` in place (so a failure keeps what was measured before it)."""
    import torch
    from transformers import AutoModelForCausalLM

    hf, s = ctx.hf, result
    _log(f"=== {setting_label(s)}")
    model = AutoModelForCausalLM.from_pretrained(ctx.model_path, dtype=torch.float32)
    model.eval()
    result["dense_zero_fraction"] = zero_fraction(model, hf)
    if s["method"] != "dense":
        from llmcompressor import oneshot

        embed_before = _fingerprint(model.get_input_embeddings().weight)
        start, cpu_start = time.perf_counter(), time.process_time()
        recipe, result["layer_sparsities"] = build_recipe(s, model, ctx.calib, hf, args.owl_m, args.owl_lmbda)
        result["recipe"] = describe_recipe(recipe)
        model = oneshot(
            model=model,
            processor=ctx.tokenizer,
            dataset=ctx.dataset,
            recipe=recipe,
            num_calibration_samples=args.n_samples,
            max_seq_length=args.seqlen,
            shuffle_calibration_samples=False,
        )
        result["seconds"] = time.perf_counter() - start
        result["cpu_seconds"] = time.process_time() - cpu_start
        if _fingerprint(model.get_input_embeddings().weight) != embed_before:
            raise RuntimeError("oneshot changed the embeddings / tied lm_head despite ignore=" + repr(IGNORE))
    model.eval()
    result["zero_fraction"] = zero_fraction(model, hf)
    result["bits_per_weight"] = quantized_bits_per_weight(model, hf)
    result["layer_zero_fractions"] = layer_zero_fractions(model, hf)
    ppl = hf.perplexity.perplexity(
        model, ctx.tokenizer, "pydocs", seqlen=args.eval_seqlen, max_tokens=args.max_tokens, progress=True
    )
    result.update(ppl=ppl.perplexity, eval_tokens=ppl.n_tokens, eval_seconds=ppl.seconds, eval_protocol=ppl.protocol)
    _log(
        f"{setting_label(s)}: ppl {ppl.perplexity:.3f}, oneshot {result['seconds']:.1f} s, "
        f"zeros {result['zero_fraction']:.4f}"
    )
    return result


def markdown_table(results: list[dict]) -> str:
    lines = [
        "| setting | ppl | oneshot wall s | oneshot CPU s | zero fraction (decoder linears) | eval tokens | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ppl = f"{r['ppl']:.3f}" if r["ppl"] is not None else "-"
        zf = f"{r['zero_fraction']:.4f}" if r["zero_fraction"] is not None else "-"
        note = r["error"] or ""
        if r["layer_sparsities"]:
            ls = r["layer_sparsities"]
            note = f"OWL layer sparsities {min(ls):.3f}..{max(ls):.3f} (M={r['owl_m']}, lambda={r['owl_lmbda']})"
        times = f"{r['seconds']:.1f} | {r.get('cpu_seconds', 0.0):.1f}"
        note = note.replace("|", "/")[:200]
        lines.append(f"| {setting_label(r)} | {ppl} | {times} | {zf} | {r['eval_tokens'] or '-'} | {note} |")
    return "\n".join(lines)


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _machine() -> str:
    return f"{cpu_name()}, {os.cpu_count()} cores"


def run_inside(settings: list[dict], args: argparse.Namespace) -> int:
    import importlib.metadata as md
    import traceback

    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer

    # llm-compressor logs to stdout (from import on); pointing its console sink at stderr keeps stdout for our table.
    with contextlib.redirect_stdout(sys.stderr):
        llmc_logger = importlib.import_module("llmcompressor.logger")  # the module; the package attribute is a Logger
        llmc_logger.configure_logger(llmc_logger.LOGGER_CONFIG)
    if args.threads:
        torch.set_num_threads(args.threads)
    hf = _import_hf_ext_common()
    model_path = hf.models.default_model_path() if args.model == "default" else Path(args.model)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    calib = hf.data.calibration_batches(tokenizer, "pydocs", args.n_samples, args.seqlen, seed=args.seed)
    dataset = Dataset.from_dict({"input_ids": calib.tolist(), "attention_mask": torch.ones_like(calib).tolist()})
    versions = {p: md.version(p) for p in VERSION_PACKAGES}
    ctx = types.SimpleNamespace(
        hf=hf, model_path=model_path, tokenizer=tokenizer, calib=calib, dataset=dataset, versions=versions
    )
    _log(
        f"versions {versions}; calibration {tuple(calib.shape)} from pydocs (seed {args.seed}), "
        f"{torch.get_num_threads()} threads"
    )
    results = []
    for s in settings:
        result = new_result(s, args, versions)
        results.append(result)
        try:
            run_setting(result, ctx, args)
        except Exception as e:  # one broken setting (e.g. owl-native) must not lose the others' results
            traceback.print_exc()
            result["error"] = f"{type(e).__name__}: {e}".splitlines()[0]
        if args.json:
            _atomic_write(Path(args.json), json.dumps(results, indent=1) + "\n")
    table = markdown_table(results)
    print(table, flush=True)
    if args.md:
        command = "python benchmarks/llmc_baseline.py " + " ".join(sys.argv[1:])
        protocol = next((r["eval_protocol"] for r in results if r.get("eval_protocol")), "-")
        header = (
            "# llm-compressor baseline (peer tool) on Gemma 3 270M\n\n"
            f"- command: `{command}`\n- machine: {_machine()}, torch threads {torch.get_num_threads()}, "
            f"load average at the end {os.getloadavg()[0]:.1f} (wall times grow with it; CPU s much less)\n"
            f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC\n"
            f"- versions: {', '.join(f'{k} {v}' for k, v in versions.items())}\n"
            f"- calibration: {args.n_samples} x {args.seqlen} tokens, hf_ext `calibration_batches(tok, 'pydocs', "
            f"seed={args.seed})` (BOS first); `lm_head` not compressed\n"
            f"- evaluation: hf_ext `perplexity`, {protocol}\n"
            "- seconds: oneshot wall time (OWL: including our layer-sparsity computation)\n\n"
        )
        _atomic_write(Path(args.md), header + table + "\n")
    return 1 if any(r["error"] for r in results) else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--grid", help="comma-separated METHOD[:SPARSITY][:wBITS][:PROFILE] entries (overrides --method)")
    p.add_argument("--method", choices=METHODS, default=None, help="one setting (default: sparsegpt:0.5,wanda:0.5)")
    p.add_argument("--sparsity", type=float, default=None)
    p.add_argument("--bits", type=int, default=None, help="GPTQ weight bits (W{bits}A16, group 128)")
    p.add_argument("--profile", choices=PROFILES, default="uniform")
    p.add_argument("--model", default="default", help="model folder (default: hf-ext's Gemma 3 270M copy)")
    p.add_argument("--n-samples", type=int, default=16, help="calibration windows")
    p.add_argument("--seqlen", type=int, default=256, help="calibration window length")
    p.add_argument("--seed", type=int, default=0, help="calibration window sampling seed")
    p.add_argument("--max-tokens", type=int, default=8176, help="evaluation tokens (whole 512-token windows)")
    p.add_argument("--eval-seqlen", type=int, default=512)
    p.add_argument("--owl-m", type=float, default=5.0)
    p.add_argument("--owl-lmbda", type=float, default=0.08)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--json", default=None, help="write the results list here")
    p.add_argument("--md", default=None, help="write a markdown report (command, machine, date, table) here")
    p.add_argument("--setup-only", action="store_true", help="create the venv and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.grid:
            settings = [parse_setting(t) for t in args.grid.split(",") if t.strip()]
        elif args.method:
            settings = [
                validate_setting(
                    {"method": args.method, "sparsity": args.sparsity, "bits": args.bits, "profile": args.profile}
                )
            ]
        else:
            settings = [parse_setting("sparsegpt:0.5"), parse_setting("wanda:0.5")]
        if args.n_samples <= 0 or args.seqlen <= 1 or args.max_tokens <= 0:
            raise ValueError("--n-samples, --seqlen and --max-tokens must be positive (seqlen > 1).")
    except ValueError as e:
        parser.error(str(e))
    if not _in_venv():
        ensure_venv()
        if args.setup_only:
            return 0
        argv_full = [str(VENV_PYTHON), str(Path(__file__).resolve()), *(sys.argv[1:] if argv is None else argv)]
        os.execv(str(VENV_PYTHON), argv_full)
    if args.setup_only:
        return 0
    return run_inside(settings, args)


if __name__ == "__main__":
    sys.exit(main())
