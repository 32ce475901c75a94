"""``hf-ext demo`` row: speculative decoding speedup over plain greedy on the loaded model (default: Gemma 3 270M).

The draft is the target's own blocks with a reduced, frequency-ranked vocabulary head (see :mod:`.drafts`),
lookahead ``"auto"``; the output is checked to equal plain greedy's.
"""

from __future__ import annotations

import time

import torch
from transformers.utils import logging

from ..common.arch import get_blocks
from .drafts import frequency_vocab, shallow_self_draft
from .mixin import SpeculativeStats, generate

logger = logging.get_logger(__name__)

DEMO_NEW_TOKENS = 48
DEMO_HEAD_VOCAB = 4096


def _texts():
    from ..common.data import load_text

    try:
        return load_text("pydocs", "calibration")[:40], load_text("pydocs", "eval")[5]
    except FileNotFoundError:
        sample = ("The module defines the following functions. Return a new list of the items; raise ValueError "
                  "if the argument is not a sequence. ") * 20
        return [sample], sample


def demo_rows(model, tokenizer, ctx) -> list:
    from ..common.demo import DemoRow

    calib, doc = _texts()
    head = frequency_vocab(tokenizer, calib, min(DEMO_HEAD_VOCAB, len(tokenizer)))
    depth = len(get_blocks(model))
    draft = shallow_self_draft(model, depth, head)
    ids = tokenizer(doc, return_tensors="pt")
    inputs = {k: v[:, :160].to(model.device) for k, v in ids.items()}
    gen = dict(do_sample=False, max_new_tokens=DEMO_NEW_TOKENS)
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
    return [DemoRow(
        "speculative", f"self-draft {depth} blocks, head {head.numel()} tokens, lookahead auto",
        "greedy speedup", base / spec, f"{new / base:.2f} tok/s",
        f"{new / spec:.2f} tok/s, TAR {stats.mean_accepted_length:.2f}, output {same} to greedy",
    )]
