"""``hf-ext demo`` row: 20 % of the prunable parameters removed, perplexity and decode speed against dense."""

from __future__ import annotations

import copy
import time

import torch

from .config import StructuredPruningConfig
from .quantizer import prune_structured

# A one-minute budget: 2 SPSA queries over every gate at once, so the gradient term is mostly noise here (the
# accurate default takes thousands of passes; hf_ext.structured.gradient_agreement measures the difference).
DEMO_CONFIG = dict(ratio=0.2, criterion="mini_llm", n_samples=4, seqlen=128, spsa_queries=2, spsa_scope="model",
                   batch_size=2)


@torch.no_grad()
def decode_tokens_per_second(model, tokenizer, prompt: str = "The Python standard library", new_tokens: int = 24,
                             repeats: int = 1) -> float:
    """Greedy ``generate`` throughput (new tokens / s), best of ``repeats``."""
    ids = tokenizer(prompt, return_tensors="pt").to(next(model.parameters()).device)
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        out = model.generate(**ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        produced = out.shape[1] - ids.input_ids.shape[1]
        best = max(best, produced / (time.perf_counter() - start))
    return best


def demo_rows(model, tokenizer, ctx) -> list:
    from ..common.demo import DemoRow

    dense_tps = decode_tokens_per_second(model, tokenizer)
    pruned = copy.deepcopy(model)
    start = time.perf_counter()
    prune_structured(pruned, tokenizer, StructuredPruningConfig(**DEMO_CONFIG))
    seconds = time.perf_counter() - start
    achieved = pruned.config.quantization_config.achieved_ratio
    setting = f"{100 * achieved:.1f}% removed, mini_llm ({DEMO_CONFIG['spsa_queries']} SPSA queries, demo budget)"
    rows = [
        DemoRow("structured", setting, "perplexity", ctx.ppl(pruned, tokenizer),
                ctx.dense_ppl if ctx.dense_ppl is not None else "", note=f"pruned in {seconds:.0f} s, no recovery"),
        DemoRow("structured", setting, "decode tokens/s", decode_tokens_per_second(pruned, tokenizer), dense_tps,
                note="greedy generate, 24 new tokens"),
    ]
    del pruned
    return rows
