"""Shared set-up of the examples: the model folder and the text to calibrate / evaluate on.

``--model default`` (the embedded Gemma 3 270M) and ``pydocs`` text (python3.11-doc) are the real run; ``--tiny``
saves a random-weight Llama and a small text file to a temporary folder, so each example runs end to end in seconds
(the test suite runs them that way; its numbers are meaningless).
"""

from __future__ import annotations

import argparse
import atexit
import shutil
import tempfile
from pathlib import Path

TINY_TEXT = (
    "The model reads a token and predicts the next one, while the cache keeps keys and values so that decoding "
    "runs fast. Sparse weights save memory, and quantized weights save even more. A function returns a value; a "
    "module groups functions and classes, and a package groups modules.\n\n"
)


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--model", default="default", help="model folder or Hub id ('default': Gemma 3 270M)")
    p.add_argument("--text", default="pydocs", help="calibration / evaluation text: pydocs, wikitext2, c4 or a path")
    p.add_argument("--tiny", action="store_true", help="a tiny random model and text (a smoke run)")
    p.add_argument("--out", default=None, help="output folder (default: a temporary one)")
    return p


def setup(args: argparse.Namespace) -> tuple[str, str, Path]:
    """(model folder, text source, output folder) for ``args``."""
    from hf_ext.common.models import resolve_model_path, tiny_model

    work = Path(tempfile.mkdtemp(prefix="hf_ext_example_"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)  # leave nothing behind in the temp directory
    out = Path(args.out) if args.out else work / "out"
    if not args.tiny:
        return resolve_model_path(args.model), args.text, out
    model, tok = tiny_model("llama")
    model.save_pretrained(work / "model")
    tok.save_pretrained(work / "model")
    (work / "text.txt").write_text(TINY_TEXT * 60)
    return str(work / "model"), str(work / "text.txt"), out
