import time

import pytest
import torch

from hf_ext.common.models import tiny_model, tiny_tokenizer
from hf_ext.common.utils import atomic_dir

from .conftest import FAMILIES


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_models_generate(family):
    model, tok = tiny_model(family)
    ids = tok(["def main():", "the model"], return_tensors="pt", padding=True)
    out = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert out.shape == (2, ids.input_ids.shape[1] + 5)


def test_tiny_models_are_seeded():
    a, _ = tiny_model("opt", seed=1)
    b, _ = tiny_model("opt", seed=1)
    c, _ = tiny_model("opt", seed=2)
    pa, pb, pc = (next(m.parameters()) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_tiny_tokenizer_round_trips_text():
    tok = tiny_tokenizer()
    text = "Sparse weights save memory."
    ids = tok(text).input_ids
    assert ids[0] == tok.bos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == text


def test_unknown_tiny_family():
    with pytest.raises(ValueError, match="Unknown tiny model family 'gpt2'"):
        tiny_model("gpt2")


def test_atomic_dir_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "half.bin").write_bytes(b"x")
        raise RuntimeError("boom")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
    with atomic_dir(target, overwrite=True) as tmp:
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == [".hf_ext_files.json", "b"]


@pytest.mark.slow
def test_default_model_loads_and_is_gemma3():
    from hf_ext.common.models import load_default_model
    from hf_ext.common.perplexity import perplexity

    start = time.perf_counter()
    model, tok = load_default_model()
    assert time.perf_counter() - start < 120
    assert model.config.model_type == "gemma3_text"
    assert 260e6 < sum(p.numel() for p in model.parameters()) < 280e6
    res = perplexity(model, tok, "pydocs", seqlen=512, max_tokens=2044, progress=False)
    assert 5 < res.perplexity < 20


def test_atomic_writes_get_ordinary_permissions(tmp_path):
    import os

    from hf_ext.common.utils import atomic_write_text, current_umask

    atomic_write_text(tmp_path / "f.txt", "x")
    with atomic_dir(tmp_path / "d"):
        pass
    assert (os.stat(tmp_path / "f.txt").st_mode & 0o777) == 0o666 & ~current_umask()
    assert (os.stat(tmp_path / "d").st_mode & 0o777) == 0o777 & ~current_umask()


def test_tiny_model_is_silent_and_takes_vocab_size(capfd):
    model, tok = tiny_model("opt", vocab_size=1000)
    assert capfd.readouterr().out == ""
    assert model.config.vocab_size == 1000 and model.get_input_embeddings().weight.shape[0] == 1000
    assert len(tok) <= 1000


def test_hub_base_model_only_for_hub_ids(tmp_path):
    from hf_ext.common.hub import hub_base_model

    assert hub_base_model("facebook/opt-125m") == "facebook/opt-125m"
    assert hub_base_model(str(tmp_path)) is None and hub_base_model("./x") is None and hub_base_model(None) is None
