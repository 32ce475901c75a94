"""The GPTQ rows of the any-precision benchmark: llm-compressor's subprocess scores exactly the tokens hf-ext scores
(equal dense perplexity), and W4 / W3 group-128 settings run with honestly counted bits per weight.

Needs ``.venv-llmc`` (``python benchmarks/llmc_baseline.py --setup-only``); skipped without it."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from hf_ext.common.models import tiny_model
from hf_ext.common.perplexity import perplexity

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "llmc_baseline.py"
VENV_READY = REPO / ".venv-llmc" / ".hf_ext_llmc_ready.json"


def test_gptq_grid_parses_w3_and_w4():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import llmc_baseline
    finally:
        sys.path.remove(str(SCRIPT.parent))
    for bits in (3, 4):
        s = llmc_baseline.parse_setting(f"gptq:w{bits}")
        assert (s["method"], s["bits"]) == ("gptq", bits)
    with pytest.raises(ValueError, match="bits"):
        llmc_baseline.parse_setting("gptq")


@pytest.mark.skipif(not VENV_READY.is_file(), reason=".venv-llmc missing: run benchmarks/llmc_baseline.py "
                    "--setup-only to create it")
def test_subprocess_scores_the_same_tokens(tmp_path):
    model, tok = tiny_model("llama", hidden_size=128, intermediate_size=256)  # group 128 needs 128 columns
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    ours = perplexity(model, tok, "pydocs", seqlen=64, max_tokens=252, progress=False)
    out = tmp_path / "r.json"
    cmd = [sys.executable, str(SCRIPT), "--model", str(tmp_path / "m"), "--grid", "dense,gptq:w4,gptq:w3",
           "--n-samples", "2", "--seqlen", "64", "--max-tokens", "252", "--eval-seqlen", "64", "--threads", "1",
           "--json", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = {r["bits"]: r for r in json.loads(out.read_text())}
    assert rows[None]["ppl"] == ours.perplexity  # same windows, same evaluator: bit-equal
    assert rows[None]["eval_protocol"] == ours.protocol and rows[None]["bits_per_weight"] is None
    for bits in (3, 4):
        r = rows[bits]
        assert r["error"] is None and math.isfinite(r["ppl"]) and r["ppl"] != ours.perplexity
        assert r["bits_per_weight"] == pytest.approx(bits + 16 / 128)  # codes + one fp16 scale per 128 weights
