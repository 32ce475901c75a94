"""Memory measurements of the any-precision benchmark: a variant's RSS in a fresh process, and the size bar."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from hf_ext.any_precision import AnyPrecisionLinear

_PROBE = r"""
import json, sys, torch
from transformers import AutoTokenizer
import hf_ext
from hf_ext.common.models import load_model
from hf_ext.any_precision.model import resident_nbytes
path, width = sys.argv[1], sys.argv[2]
if width == "dense":
    model, tok = load_model(path)
else:
    model = hf_ext.any_precision.from_pretrained(path, precisions=[int(width)])
    tok = AutoTokenizer.from_pretrained(path)
ids = tok("def main():\n    return", return_tensors="pt").input_ids
with torch.no_grad():
    model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
rss = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS")) * 1024
print("PROBE " + json.dumps({"rss": rss, "own": resident_nbytes(model)}))
"""


def probe(path: str, width: str) -> dict:
    """Load one variant alone in a fresh process, generate, and report its RSS and its own resident bytes."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(os.cpu_count()))}
    r = subprocess.run([sys.executable, "-c", _PROBE, path, width], capture_output=True, text=True, env=env,
                       timeout=600)
    line = next((x for x in r.stdout.splitlines() if x.startswith("PROBE ")), None)
    if line is None:
        raise RuntimeError(f"memory probe for {width} failed:\n{r.stderr[-2000:]}")
    return json.loads(line[6:])


def size_bar(rows: int = 4096, cols: int = 4096, lo: int = 3, hi: int = 8,
             lut_dtype: torch.dtype = torch.float16) -> dict[str, float]:
    """Linears' bytes of a lo..hi checkpoint vs a single hi-bit model of the same format, for one layer shape."""
    all_widths = AnyPrecisionLinear(cols, rows, False, list(range(lo, hi + 1)), device="meta", lut_dtype=lut_dtype)
    single = AnyPrecisionLinear(cols, rows, False, [hi], device="meta", lut_dtype=lut_dtype)
    return {"all": all_widths.stored_nbytes(), "single": single.stored_nbytes(),
            "ratio": all_widths.stored_nbytes() / single.stored_nbytes()}
