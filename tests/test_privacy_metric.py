"""The ``samia`` evaluate module: install into evaluate's cache, load by name offline in a fresh process, run the
metric card's doctests, and evaluate's own module conventions."""

import doctest
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import hf_ext.metrics as hm


def _env(tmp_path: Path) -> dict:
    env = dict(os.environ)
    for var in ("HF_MODULES_CACHE", "HF_EXT_NO_METRIC_INSTALL", "XDG_CACHE_HOME"):
        env.pop(var, None)
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="1", HF_EVALUATE_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return env


def _run(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


def test_load_by_name_offline_in_fresh_process_and_run_card_doctests(tmp_path):
    """import hf_ext installs the module; evaluate.load("samia") then works offline, and the examples in
    _KWARGS_DESCRIPTION and in README.md pass as doctests in that same fresh process."""
    readme = Path(hm.path("samia")) / "README.md"
    code = f"""
import doctest, re, sys, evaluate, hf_ext
samia = evaluate.load("samia")
mod = sys.modules[type(samia).__module__]
assert "evaluate_modules" in mod.__file__, mod.__file__
print("LOADED_FROM", mod.__file__)
res = doctest.run_docstring_examples
t = doctest.DocTestParser().get_doctest(mod._KWARGS_DESCRIPTION, {{}}, "samia_kwargs", None, 0)
runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
runner.run(t)
text = open({str(readme)!r}).read()
blocks = "\\n".join(re.findall(r"```python\\n(>>>.*?)```", text, flags=re.S))
t2 = doctest.DocTestParser().get_doctest(blocks, {{"samia": samia}}, "samia_readme", None, 0)
runner.run(t2)
print("DOCTESTS", runner.summarize(verbose=False), len(t.examples), len(t2.examples))
sys.exit(1 if runner.failures else 0)
"""
    proc = _run(code, _env(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert str(tmp_path / "hf_home" / "modules" / "evaluate_modules") in proc.stdout
    m = re.search(r"DOCTESTS TestResults\(failed=0, attempted=(\d+)\) (\d+) (\d+)", proc.stdout)
    assert m and int(m.group(2)) >= 8 and int(m.group(3)) >= 3, proc.stdout


def test_install_is_idempotent_and_layout_matches_evaluate(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "mods"))
    monkeypatch.delitem(sys.modules, "evaluate.config", raising=False)  # path from the environment, not evaluate
    first = hm.install(["samia"])["samia"]
    assert re.fullmatch(r"[0-9a-f]{64}", first.name)
    assert first.parent == tmp_path / "mods" / "evaluate_modules" / "metrics" / "evaluate-metric--samia"
    for folder in (tmp_path / "mods", tmp_path / "mods" / "evaluate_modules", first.parent.parent, first.parent, first):
        assert (folder / "__init__.py").is_file(), folder
    assert (first / "samia.py").read_bytes() == (Path(hm.path("samia")) / "samia.py").read_bytes()
    assert (first / "README.md").is_file()
    mtime = (first / "samia.py").stat().st_mtime
    assert hm.install(["samia"])["samia"] == first  # same content, same folder, nothing rewritten
    assert (first / "samia.py").stat().st_mtime == mtime
    assert [p.name for p in first.parent.iterdir() if not p.name.startswith("__")] == [first.name]  # no temp left
    # a stale version written later would win by mtime: install must make ours the newest again
    stale = first.parent / ("0" * 64)
    stale.mkdir()
    (stale / "samia.py").write_text("raise ImportError('stale')\n")
    os.utime(stale / "samia.py", (mtime + 100, mtime + 100))
    hm.install(["samia"])
    assert (first / "samia.py").stat().st_mtime > (stale / "samia.py").stat().st_mtime
    # the cached module imports its logic from hf_ext, never relatively
    src = (first / "samia.py").read_text()
    assert "from hf_ext.privacy.samia import" in src and not re.search(r"^from \.", src, flags=re.M)


def test_install_never_raises_on_read_only_cache(tmp_path, monkeypatch, caplog):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    monkeypatch.setenv("HF_MODULES_CACHE", str(ro / "mods"))
    monkeypatch.delitem(sys.modules, "evaluate.config", raising=False)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who can write to read-only folders (root)")
        assert hm.install(["samia"]) == {}
    finally:
        ro.chmod(0o700)


def test_install_survives_unusable_cache_path(tmp_path, monkeypatch, caplog):
    """Even as root: a cache path below a regular file cannot be created; install (run by import hf_ext) must
    warn and return, so the import never fails."""
    from transformers.utils import logging as hf_logging

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("HF_MODULES_CACHE", str(blocker / "mods"))
    monkeypatch.delitem(sys.modules, "evaluate.config", raising=False)
    hf_logging.enable_propagation()
    try:
        with caplog.at_level("WARNING"):
            assert hm.install() == {}
    finally:
        hf_logging.disable_propagation()
    assert "could not install its evaluate modules" in caplog.text


def test_metric_module_follows_evaluate_conventions():
    import evaluate

    module = evaluate.load(hm.path("samia"))  # the explicit, cache-free form
    assert module.compute(references=["a b c d"], samples=[["c d"]]) == {"scores": [1.0]}
    params = inspect.signature(type(module)._compute).parameters
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())  # no **kwargs
    for name in ("references", "predictions", "labels", "model", "tokenizer", "num_samples", "prefix_ratio", "zlib"):
        assert name in params
    assert module.info.citation and "2404.11262" in module.info.citation
    assert list(module.info.features) == ["predictions", "references"]
    readme = (Path(hm.path("samia")) / "README.md").read_text()
    for section in ("## Metric Description", "## How to Use", "### Inputs", "### Output Values",
                    "#### Values from Popular Papers", "### Examples", "## Limitations and Bias", "## Citation"):
        assert section in readme, section
    assert "Duan et al., 2024" in readme
    assert (Path(hm.path("samia")) / "requirements.txt").is_file()
    with pytest.raises(ValueError, match="no evaluate module 'nope'"):
        hm.path("nope")


def test_metric_bad_inputs_through_evaluate():
    import evaluate

    samia = evaluate.load(hm.path("samia"))
    texts = ["a b c d", "e f g h"]
    with pytest.raises(ValueError, match=r"number of predictions \(1\) and references \(2\)"):
        samia.compute(references=texts, samples=[["c d"]])
    with pytest.raises(ValueError, match="labels must be 0"):
        samia.compute(references=texts, samples=[["c d"], ["g"]], labels=[1, 5])
    with pytest.raises(ValueError, match="text 0 has 1 whitespace words"):
        samia.compute(references=["a", "e f g h"], samples=[["c d"], ["g"]])


def test_doctest_parser_sees_the_examples():
    """Guard against the examples silently disappearing from the module (the fresh-process test runs them)."""
    src = (Path(hm.path("samia")) / "samia.py").read_text()
    block = src.split('_KWARGS_DESCRIPTION = """', 1)[1].split('"""', 1)[0]
    examples = doctest.DocTestParser().get_examples(block)
    assert any("evaluate.load(\"samia\")" in e.source for e in examples)
    assert any("zlib=True" in e.source for e in examples)


def test_no_hub_warning_when_our_cached_copy_is_used(tmp_path):
    env = _env(tmp_path)
    env.pop("HF_EVALUATE_OFFLINE")  # the Hub attempt fails (no network), then the cached copy is used
    proc = _run("import evaluate, hf_ext; evaluate.load('samia'); print('OK')", env)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-2000:]
    assert "couldn't be found" not in proc.stderr


def test_card_numbers_match_the_results_file():
    card = (Path(hm.path("samia")) / "README.md").read_text()
    results = (Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "samia.md").read_text()
    assert "app_file" not in card
    quoted = re.search(r"AUROC ([\d.]+) / ([\d.]+) at 32 / 64 words \(TPR@10%FPR ([\d.]+) / ([\d.]+)\)", card)
    assert quoted, "the card must quote the measured SaMIA figures"
    auroc32, auroc64, tpr32, tpr64 = quoted.groups()
    assert f"| 32 | samia | {auroc32} | {tpr32} |" in results
    assert f"| 64 | samia | {auroc64} | {tpr64} |" in results


def test_predictions_feature_and_add_batch():
    import evaluate

    samia = evaluate.load(hm.path("samia"))
    texts = ["the cat sat on the mat all day", "stocks fell sharply on monday after the report"]
    samples = [["the mat all day", "the mat all night"], ["a storm hit the coast", "it rained"]]
    assert samia.compute(references=texts, predictions=samples) == {"scores": [0.875, 0.125]}
    for t, s in zip(texts, samples):
        samia.add_batch(references=[t], predictions=[s])
    assert samia.compute() == {"scores": [0.875, 0.125]}
    with pytest.raises(ValueError, match="not both"):
        samia.compute(references=texts, predictions=samples, samples=samples)
