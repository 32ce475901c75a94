"""benchmarks/samia.py: windows (distinct, split by document, deeper windows only when needed) and a --tiny run end
to end that writes its table and JSON where it is told, never under benchmarks/results/."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture()
def docs(tmp_path, monkeypatch):
    """A fake python3.11-doc tree: 12 library pages whose words name their document and position."""
    lib = tmp_path / "pydocs" / "library"
    lib.mkdir(parents=True)
    for d in range(12):
        n_words = 30 + 20 * d  # page d has (n_words - 10) // 8 windows of 8 words after word 10
        (lib / f"page{d:02d}.rst.txt").write_text(" ".join(f"d{d}w{i}" for i in range(n_words)))
    (tmp_path / "pydocs" / "tutorial").mkdir()
    (tmp_path / "pydocs" / "tutorial" / "x.rst.txt").write_text("not library " * 50)
    monkeypatch.setenv("HF_EXT_PYDOCS", str(tmp_path / "pydocs"))
    monkeypatch.syspath_prepend(str(BENCH))
    import samia

    return samia


def _doc(window):
    return window[0].split("w")[0]


def test_windows_one_per_document_when_enough(docs):
    members, non_members, info = docs.pick_windows(5, 8, 10, seed=0)
    assert len(members) == len(non_members) == 5 and info["beyond_first_window"] == 0
    assert all(w[0].endswith("w10") for w in members + non_members)  # every window is its page's first
    assert len({_doc(w) for w in members + non_members}) == 10  # ten different pages


def test_windows_deeper_when_needed_never_overlap_or_cross_sides(docs, tmp_path):
    members, non_members, info = docs.pick_windows(20, 8, 10, seed=0, windows_json=str(tmp_path / "w.json"))
    assert len(members) == len(non_members) == 20 and info["documents_per_side"] == 6
    assert info["beyond_first_window"] == 40 - 12 and info["window_layers"] > 1
    assert not {_doc(w) for w in members} & {_doc(w) for w in non_members}  # split by document
    words = [x for w in members + non_members for x in w]
    assert len(words) == len(set(words)) == 40 * 8  # no word in two windows: no overlap
    for w in members + non_members:
        start = int(w[0].split("w")[1])
        assert (start - 10) % 8 == 0 and w == [f"{_doc(w)}w{i}" for i in range(start, start + 8)]
    again = docs.pick_windows(20, 8, 10, seed=0, windows_json=str(tmp_path / "w.json"))  # read back
    assert again[0] == members and again[1] == non_members
    with pytest.raises(SystemExit, match="holds 20 \\+ 20"):
        docs.pick_windows(21, 8, 10, seed=0, windows_json=str(tmp_path / "w.json"))
    with pytest.raises(SystemExit, match="lower --n"):
        docs.pick_windows(500, 8, 10, seed=0)


def test_tiny_run_writes_only_where_told(tmp_path):
    results = BENCH / "results"
    before = {p.name: p.stat().st_mtime_ns for p in results.iterdir()}
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(BENCH.parent)}
    proc = subprocess.run([sys.executable, str(BENCH / "samia.py"), "--tiny", "--n", "4", "--lengths", "12",
                           "--n-boot", "50", "--out-dir", str(out)], capture_output=True, text=True, env=env,
                          timeout=300)
    if "python3.11-doc" in proc.stderr:
        pytest.skip("python3.11-doc not installed")
    assert proc.returncode == 0, proc.stderr[-2000:]
    md = (out / "samia_tiny.md").read_text()
    assert "| 12 | samia |" in md and "AUROC - loss [95% CI]" in md and "**samia - loss AUROC**" in md
    data = json.loads((out / "samia_tiny.json").read_text())
    sam = next(r for r in data["records"] if r["method"] == "samia")
    assert sam["sampling"]["generated_tokens"] >= sam["sampling"]["kept_tokens"] > 0 and not data["partial"]
    assert {p.name: p.stat().st_mtime_ns for p in results.iterdir()} == before  # nothing under results/
    bad = subprocess.run([sys.executable, str(BENCH / "samia.py"), "--tiny", "--dtype", "bfloat16"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "is for --device cuda" in bad.stderr
