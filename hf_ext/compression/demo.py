"""``hf-ext demo`` row: the default model at 50 % sparsity (MRP allocation, Wanda metric) next to the dense one."""

from __future__ import annotations

import copy
import time

from .config import CompressionConfig
from .quantizer import compress

# Small calibration keeps the row near a minute on a 2-core CPU (the benchmark states its own settings). MRP's
# measured mode (the default, re-pruning each block per step) took 228 s here, so the demo uses the simulated one.
DEMO_CONFIG = dict(sparsity=0.5, allocation="mrp", mrp_mode="simulated", metric="wanda", calibration="pydocs",
                   n_samples=8, seqlen=256)


def demo_rows(model, tokenizer, ctx) -> list:
    from ..common.demo import DemoRow

    start = time.perf_counter()
    sparse = compress(copy.deepcopy(model), tokenizer, CompressionConfig(**DEMO_CONFIG))
    ppl = ctx.ppl(sparse, tokenizer)
    achieved = sparse.config.quantization_config.achieved_sparsity
    seconds = time.perf_counter() - start
    del sparse
    return [DemoRow("compression", "50% mrp (simulated) + wanda", "perplexity", ppl,
                    ctx.dense_ppl if ctx.dense_ppl else "",
                    f"achieved sparsity {achieved:.3f} (8 x 256 calibration tokens); {seconds:.0f} s")]
