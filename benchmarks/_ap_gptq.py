"""GPTQ rows of the any-precision benchmark: llm-compressor in its own venv, through ``llmc_baseline.py``.

The subprocess gets the same model folder, the same calibration windows (``calibration_batches(tok, "pydocs",
n_samples, seqlen, seed)``, which the Fisher pass also uses) and the same evaluation (``hf_ext.common.perplexity``
with the same ``seqlen`` and ``max_tokens``); a dense row in the same grid checks that the subprocess scores exactly
the tokens the parent does (its dense perplexity must equal the parent's).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import llmc_baseline

GRID = "dense,gptq:w4,gptq:w3"


def venv_ready() -> bool:
    return llmc_baseline.READY.is_file() and llmc_baseline.VENV_PYTHON.is_file()


def run_gptq(model: str, n_samples: int, seqlen: int, seed: int, eval_tokens: int, threads: int,
             build_venv: bool, timeout_s: float) -> tuple[dict, str]:
    """``({"dense": row, 4: row, 3: row}, status)``; rows are llmc_baseline's JSON records (``ppl``,
    ``bits_per_weight``, ``seconds``, ``eval_protocol``, ...). Empty dict and the reason when it could not run."""
    if not venv_ready() and not build_venv:
        return {}, (f"not run: {llmc_baseline.VENV} is missing (create it with `python benchmarks/llmc_baseline.py "
                    "--setup-only`)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "gptq.json"
        cmd = [sys.executable, str(Path(llmc_baseline.__file__).resolve()), "--model", str(model), "--grid", GRID,
               "--n-samples", str(n_samples), "--seqlen", str(seqlen), "--seed", str(seed),
               "--max-tokens", str(eval_tokens), "--eval-seqlen", str(seqlen), "--threads", str(threads),
               "--json", str(out)]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return {}, f"timed out after {timeout_s / 60:.0f} min"
        if not out.is_file():
            return {}, f"llmc_baseline.py exited {res.returncode} without results: {res.stderr[-800:]}"
        rows = json.loads(out.read_text())
    got = {("dense" if r["method"] == "dense" else r["bits"]): r for r in rows if r["error"] is None}
    failed = [f"{r['method']} w{r['bits']}: {r['error']}" for r in rows if r["error"] is not None]
    return got, "ran" + (f"; failed: {'; '.join(failed)}" if failed else "")
