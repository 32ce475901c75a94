"""Every script in examples/ runs end to end (``--tiny``: a random Llama and a small text, seconds each)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
EXPECTED = {
    "compression.py": "reloaded bit for bit",
    "structured_pruning.py": "reloaded with",
    "any_precision.py": "reloaded holding [3, 4] bits only",
    "speculative_decoding.py": "verify steps",
    "membership_inference.py": "SaMIA: AUROC",
    "best_effort_serving.py": "best-effort server answered",
    "self_alignment.py": "held-out score before",
    "tool_continual_learning.py": "Tool-CL metrics:",
    "tiered_cache_trainer.py": "tiered cache: device hit rate",
}


def test_every_example_is_listed():
    assert sorted(p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_")) == sorted(EXPECTED)


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_example_runs(script, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, str(EXAMPLES / script), "--tiny", "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=600, env=env, cwd=EXAMPLES)
    assert res.returncode == 0, res.stderr[-3000:]
    assert EXPECTED[script] in res.stdout


def test_examples_leave_no_temporary_folders(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}
    res = subprocess.run([sys.executable, str(EXAMPLES / "compression.py"), "--tiny"], capture_output=True, text=True,
                         timeout=600, env=env, cwd=EXAMPLES)
    assert res.returncode == 0, res.stderr[-3000:]
    assert not list(tmp_path.glob("hf_ext_example_*"))
