import subprocess
import sys

import pytest


@pytest.fixture(scope="module")
def saved_tiny(tiny_model_dir):
    return tiny_model_dir("llama")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "hf_ext.cli", *args], capture_output=True, text=True, timeout=300)


def test_eval_ppl_prints_perplexity_and_protocol(saved_tiny, tiny_text_dir):
    out = _cli("eval", "ppl", "--model", str(saved_tiny), "--data", str(tiny_text_dir), "--seqlen", "32",
               "--max-tokens", "62")
    assert out.returncode == 0, out.stderr
    assert "perplexity" in out.stdout and "2 windows of 32 tokens" in out.stdout


def test_demo_on_a_local_model_prints_the_table(saved_tiny, tiny_text_dir):
    out = _cli("demo", "--model", str(saved_tiny), "--data", str(tiny_text_dir), "--seqlen", "32",
               "--max-tokens", "62", "--only", "dense")
    assert out.returncode == 0, out.stderr
    assert "| dense" in out.stdout and "Greedy generation" in out.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["eval", "ppl", "--data", "nosuch-source"], "Unknown text source 'nosuch-source'"),
        (["eval", "ppl", "--seqlen", "0"], "seqlen must be > 1"),
    ],
)
def test_bad_input_is_a_clear_error(saved_tiny, args, message):
    out = _cli(*args, "--model", str(saved_tiny))
    assert out.returncode == 2
    assert message in out.stderr
