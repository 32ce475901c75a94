"""``hf-ext demo`` rows: speculative decoding speedup over plain greedy on the loaded model (default: Gemma 3 270M).

1. The target's own blocks with a reduced, frequency-ranked vocabulary head (see :mod:`.drafts`).
2. The trained EAGLE-style draft (:mod:`.eagle`): one found in ``benchmarks/out/`` (trained by the benchmark) or in
   hf-ext's cache is used; otherwise a small one is trained on the spot (about half a minute on the default model)
   and cached for the next demo.

Lookahead ``"auto"``; every output is checked to equal plain greedy's.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch
from transformers.utils import logging

from ..common.arch import get_blocks
from .drafts import frequency_vocab, shallow_self_draft
from .mixin import SpeculativeStats, generate

logger = logging.get_logger(__name__)

DEMO_NEW_TOKENS = 48
DEMO_HEAD_VOCAB = 4096
# the on-the-spot draft's budget: sized to train in about half a minute on Gemma 3 270M on a laptop CPU
DEMO_TRAINING = dict(num_layers=1, draft_vocab_size=4096, n_samples=12, seqlen=128, max_steps=30, batch_size=4,
                     learning_rate=2e-3, warmup_steps=3)


def _texts():
    from ..common.data import load_text

    try:
        return load_text("pydocs", "calibration")[:40], load_text("pydocs", "eval")[5]
    except FileNotFoundError:
        sample = ("The module defines the following functions. Return a new list of the items; raise ValueError "
                  "if the argument is not a sequence. ") * 20
        return [sample], sample


def _draft_folders() -> list[Path]:
    from ..common.models import cache_root

    bench = Path(__file__).resolve().parents[2] / "benchmarks" / "out"
    found = [p.parent for root in (bench, cache_root() / "speculative") if root.is_dir()
             for p in sorted(root.glob("eagle-*/config.json"))]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def find_trained_draft(model):
    """The newest saved EAGLE draft made for a target of ``model``'s shape, or None."""
    from .eagle import EagleDraftModel

    vocab = model.config.get_text_config().vocab_size
    hidden = model.config.get_text_config().hidden_size
    for folder in _draft_folders():
        try:
            cfg = json.loads((folder / "config.json").read_text())
        except (OSError, ValueError):
            continue
        if cfg.get("model_type") == "hf_ext_eagle_draft" and cfg.get("target_vocab_size") == vocab and \
                cfg.get("hidden_size") == hidden:
            return EagleDraftModel.from_pretrained(folder).to(model.device).eval(), folder
    return None


def _train_demo_draft(model, tokenizer, calib):
    from ..common.models import cache_root
    from .eagle_train import EagleTrainingConfig, train_eagle_draft

    with tempfile.TemporaryDirectory() as tmp:
        data = "pydocs"
        try:
            from ..common.data import pydocs_root

            pydocs_root()
        except FileNotFoundError:
            data = tmp
            for i, text in enumerate(calib):
                Path(tmp, f"doc{i}.txt").write_text(text)
        cfg = EagleTrainingConfig(data=data, **{**DEMO_TRAINING, "draft_vocab_size": min(
            DEMO_TRAINING["draft_vocab_size"], len(tokenizer))})
        name = getattr(model.config, "_name_or_path", "") or "target"
        folder = cache_root() / "speculative" / f"eagle-demo-{Path(name).name}-{cfg.num_layers}L"
        result = train_eagle_draft(model, tokenizer, cfg, target_name=name, output_dir=str(folder), overwrite=True,
                                   progress=False)
    return result.draft, folder, result.feature_seconds + result.train_seconds


def _compare(model, inputs, draft, gen):
    with torch.no_grad():
        model.generate(**inputs, custom_generate=generate, draft_model=draft, num_draft_tokens="auto",
                       **dict(gen, max_new_tokens=4))  # times the target once for "auto"
        t0 = time.perf_counter()
        ref = model.generate(**inputs, **gen)
        base = time.perf_counter() - t0
        stats = SpeculativeStats()
        t0 = time.perf_counter()
        out = model.generate(**inputs, custom_generate=generate, draft_model=draft, num_draft_tokens="auto",
                             speculative_stats=stats, **gen)
        spec = time.perf_counter() - t0
    new = out.shape[1] - inputs["input_ids"].shape[1]
    same = "identical" if torch.equal(out, ref) else "DIFFERENT"
    return base, spec, new, stats, same


def demo_rows(model, tokenizer, ctx) -> list:
    from ..common.demo import DemoRow

    calib, doc = _texts()
    head = frequency_vocab(tokenizer, calib, min(DEMO_HEAD_VOCAB, len(tokenizer)))
    depth = len(get_blocks(model))
    draft = shallow_self_draft(model, depth, head)
    ids = tokenizer(doc, return_tensors="pt")
    inputs = {k: v[:, :160].to(model.device) for k, v in ids.items()}
    gen = dict(do_sample=False, max_new_tokens=DEMO_NEW_TOKENS)
    base, spec, new, stats, same = _compare(model, inputs, draft, gen)
    rows = [DemoRow(
        "speculative", f"self-draft {depth} blocks, head {head.numel()} tokens, lookahead auto",
        "greedy speedup", base / spec, f"{new / base:.2f} tok/s",
        f"{new / spec:.2f} tok/s, TAR {stats.mean_accepted_length:.2f}, output {same} to greedy",
    )]
    found = find_trained_draft(model)
    if found is not None:
        eagle, folder = found
        origin = f"trained draft from {folder.name}"
    else:
        eagle, folder, secs = _train_demo_draft(model, tokenizer, calib)
        origin = f"trained here in {secs:.0f} s (cached in {folder.parent})"
    base, spec, new, stats, same = _compare(model, inputs, eagle, gen)
    rows.append(DemoRow(
        "speculative", f"EAGLE-style draft, {eagle.config.num_hidden_layers} layer(s), head "
                       f"{eagle.config.draft_vocab_size} tokens, lookahead auto",
        "greedy speedup", base / spec, f"{new / base:.2f} tok/s",
        f"{new / spec:.2f} tok/s, acceptance {stats.acceptance:.2f}, {origin}, output {same} to greedy",
    ))
    return rows
