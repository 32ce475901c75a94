"""``hf-ext demo`` row: perplexity at 3, 4 and 8 bits from one any-precision checkpoint, and its size.

To stay near the demo's time budget the calibration is tiny (4 windows of 256 tokens), the seed's Lloyd iterations
are capped lower than the default (10), and the model is quantized in a copy; the benchmark
(``benchmarks/any_precision.py``) uses the defaults and more calibration data.
"""

from __future__ import annotations

import copy

from ..common.demo import DemoContext, DemoRow
from .api import quantize
from .config import AnyPrecisionConfig
from .model import stored_mib


def demo_rows(model, tokenizer, ctx: DemoContext) -> list[DemoRow]:
    qmodel = quantize(copy.deepcopy(model), tokenizer, AnyPrecisionConfig(
        seed_bits=3, max_bits=8, n_samples=4, seqlen=256, kmeans_iterations=10))
    dense_mib = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    rows = []
    for k in (3, 4, 8):
        qmodel.set_precision(k)
        rows.append(DemoRow("any-precision", f"{k}-bit view of one 3..8-bit checkpoint", "perplexity",
                            ctx.ppl(qmodel, tokenizer), ctx.dense_ppl or "", "no reload between widths"))
    rows.append(DemoRow("any-precision", "checkpoint holding 3..8 bits", "MiB in memory", stored_mib(qmodel),
                        dense_mib, "baseline: the fp32 model"))
    return rows
