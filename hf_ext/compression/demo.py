"""``hf-ext demo`` row: the default model at 50 % sparsity (MRP allocation, Wanda metric) next to the dense one."""

from __future__ import annotations

import copy
import time

from .config import CompressionConfig
from .quantizer import compress

# Small calibration keeps the row under a minute on a laptop CPU (the benchmark states its own settings).
DEMO_CONFIG = dict(sparsity=0.5, allocation="mrp", metric="wanda", calibration="pydocs", n_samples=8, seqlen=256)


def demo_rows(model, tokenizer, ctx) -> list:
    from ..common.demo import DemoRow

    start = time.perf_counter()
    sparse = compress(copy.deepcopy(model), tokenizer, CompressionConfig(**DEMO_CONFIG))
    ppl = ctx.ppl(sparse, tokenizer)
    achieved = sparse.config.quantization_config.achieved_sparsity
    seconds = time.perf_counter() - start
    del sparse
    return [DemoRow("compression", "50% mrp + wanda", "perplexity", ppl, ctx.dense_ppl if ctx.dense_ppl else "",
                    f"achieved sparsity {achieved:.3f} (8 x 256 calibration tokens); {seconds:.0f} s")]
