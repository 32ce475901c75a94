import pytest
import torch

from hf_ext.common.data import DataSourceError, calibration_batches, load_text
from hf_ext.common.models import tiny_model


def test_load_text_from_local_folder(tiny_text_dir):
    docs = load_text(str(tiny_text_dir), "eval")
    assert len(docs) == 12
    assert all(d.strip().endswith(".") for d in docs)


def test_load_text_from_jsonl(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"text": "first doc"}\n{"text": "second doc"}\n')
    assert load_text(str(p), "train") == ["first doc", "second doc"]


def test_calibration_batches_are_reproducible_and_start_with_bos(tiny_text_dir):
    _, tok = tiny_model("llama")
    a = calibration_batches(tok, str(tiny_text_dir), n_samples=4, seqlen=32, seed=3)
    b = calibration_batches(tok, str(tiny_text_dir), n_samples=4, seqlen=32, seed=3)
    c = calibration_batches(tok, str(tiny_text_dir), n_samples=4, seqlen=32, seed=4)
    assert a.shape == (4, 32)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert (a[:, 0] == tok.bos_token_id).all()
    assert (a[:, 1:] != tok.bos_token_id).all()


def test_calibration_without_bos(tiny_text_dir):
    _, tok = tiny_model("llama")
    a = calibration_batches(tok, str(tiny_text_dir), n_samples=2, seqlen=16, add_bos=False)
    assert (a[:, 0] != tok.bos_token_id).all()


def test_unknown_source_names_the_choices():
    with pytest.raises(DataSourceError, match="Unknown text source 'wikitext3'.*pydocs"):
        load_text("wikitext3")


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_text(str(tmp_path / "nope"))


def test_missing_python_docs_tells_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_EXT_PYDOCS", str(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError, match="apt-get install -y python3.11-doc"):
        load_text("pydocs")


def test_pydocs_split_is_disjoint_by_document(monkeypatch, tmp_path):
    for part in ("library", "tutorial", "howto"):
        (tmp_path / part).mkdir()
        (tmp_path / part / f"{part}.rst.txt").write_text(f"{part} text " * 20)
    monkeypatch.setenv("HF_EXT_PYDOCS", str(tmp_path))
    ev, cal = load_text("pydocs", "eval"), load_text("pydocs", "calibration")
    assert len(ev) == 1 and ev[0].startswith("library")
    assert sorted(d.split()[0] for d in cal) == ["howto", "tutorial"]


def test_bad_split_and_sizes(tiny_text_dir):
    _, tok = tiny_model("opt")
    with pytest.raises(DataSourceError, match="Unknown split"):
        load_text(str(tiny_text_dir), "dev")
    with pytest.raises(ValueError, match="seqlen must be > 1"):
        calibration_batches(tok, str(tiny_text_dir), n_samples=2, seqlen=0)
    with pytest.raises(ValueError, match="n_samples must be > 0"):
        calibration_batches(tok, str(tiny_text_dir), n_samples=0, seqlen=8)
