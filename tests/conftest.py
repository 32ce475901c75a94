import os
from pathlib import Path

import pytest
import torch

# Tests never reach a hub: everything they load is built locally or shipped in a package.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
FAMILIES = ["opt", "llama", "gemma"]


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # Tiny models: extra threads only add contention on a small or shared CPU (2-10x slower measured here).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(params=DEVICES)
def device(request):
    """Every test that takes it runs on CPU and on CUDA when present (optimum-quanto's habit)."""
    return torch.device(request.param)


CALIBRATION_TEXT = (
    "Python is a programming language that lets you work quickly and integrate systems more effectively. "
    "A function returns a value; a module groups functions and classes. The quick brown fox jumps over the "
    "lazy dog. def main(): return 0 if x > 1 else None. Large language models predict the next token. "
    "Sparse weights save memory, and quantized weights save even more.\n\n"
)


@pytest.fixture(scope="session")
def calib(tmp_path_factory) -> str:
    """Path of a small English text file that calibration-based methods read in tests."""
    path = tmp_path_factory.mktemp("calib") / "calib.txt"
    path.write_text(CALIBRATION_TEXT * 40)
    return str(path)


@pytest.fixture(scope="session")
def tiny_text_dir(tmp_path_factory):
    """A folder of small English documents (stands in for python3.11-doc / WikiText in tests)."""
    root = tmp_path_factory.mktemp("text")
    words = ("the model reads a token and predicts the next one while the cache keeps keys and values "
             "so that decoding runs fast on small machines and large ones alike").split()
    g = torch.Generator().manual_seed(0)
    for i in range(12):
        idx = torch.randint(0, len(words), (400,), generator=g).tolist()
        (root / f"doc{i:02d}.txt").write_text(" ".join(words[j] for j in idx) + ".\n")
    return root


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Factory: ``tiny_model_dir(kind="opt", **kw)`` saves ``tiny_model(kind, **kw)`` (weights and tokenizer) into a
    fresh temporary folder and returns its Path. Session-scoped (``tmp_path_factory``) so that module-scoped fixtures
    can use it too; every call builds and saves a new model, so tests may write into the folder."""
    from hf_ext.common.models import tiny_model

    def make(kind: str = "opt", name: str = "tiny", **kw) -> Path:
        model, tok = tiny_model(kind, **kw)
        path = tmp_path_factory.mktemp(name)
        model.save_pretrained(path)
        tok.save_pretrained(path)
        return path

    return make
