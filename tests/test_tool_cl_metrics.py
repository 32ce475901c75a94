"""Tool-CL metrics: formulas against hand-computed matrices (T = 1, 2, 3), bad input, and the ``tool_cl`` evaluate
module (offline load by name in a fresh process, the card's doctests, evaluate's conventions)."""

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import hf_ext.metrics as hm
from hf_ext.tool_cl import metrics as M

R3 = [[0.8, 0.2, 0.1],
      [0.6, 0.9, 0.2],
      [0.5, 0.7, 1.0]]


def test_three_tasks_by_hand():
    out = M.continual_metrics(R3, baseline=[0.1, 0.0, 0.3])
    assert out["average_accuracy"] == pytest.approx((0.5 + 0.7 + 1.0) / 3)
    assert out["learning_accuracy"] == pytest.approx((0.8 + 0.9 + 1.0) / 3)
    assert out["backward_transfer"] == pytest.approx(((0.5 - 0.8) + (0.7 - 0.9)) / 2)  # T-1 denominator
    assert out["forward_transfer"] == pytest.approx(((0.2 - 0.0) + (0.2 - 0.3)) / 2)  # b_0 unused
    # forgetting: max over stages 0..T-2, including stages before the task was trained (j=1: max(0.2, 0.9))
    assert out["forgetting"] == pytest.approx(((0.8 - 0.5) + (0.9 - 0.7)) / 2)


def test_forgetting_is_max_based_and_not_clipped():
    r = [[0.9, 0.0, 0.0], [0.4, 0.5, 0.0], [0.6, 0.8, 0.7]]
    # task 0: best earlier 0.9, final 0.6 -> 0.3; task 1: best earlier 0.5, final 0.8 -> -0.3 (improved)
    assert M.forgetting(r) == pytest.approx(0.0)
    assert M.backward_transfer(r) == pytest.approx(((0.6 - 0.9) + (0.8 - 0.5)) / 2)


def test_two_tasks_are_single_differences():
    r = [[0.75, 0.25], [0.5, 1.0]]
    assert M.backward_transfer(r) == pytest.approx(0.5 - 0.75)
    assert M.forward_transfer(r, [0.0, 0.125]) == pytest.approx(0.25 - 0.125)
    assert M.forgetting(r) == pytest.approx(0.75 - 0.5)
    assert M.average_accuracy(r) == pytest.approx(0.75)
    assert M.learning_accuracy(r) == pytest.approx(0.875)


def test_one_task_leaves_transfer_undefined():
    out = M.continual_metrics([[0.4]], baseline=[0.1])
    assert out == {"average_accuracy": 0.4, "learning_accuracy": 0.4, "backward_transfer": None,
                   "forward_transfer": None, "forgetting": None}
    assert M.forward_transfer(R3, None) is None


@pytest.mark.parametrize("matrix, match", [
    ([], "non-empty"),
    ([[0.5, 0.5], [0.5]], "ragged"),
    ([[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]], "square"),
    ([[0.5, 1.5], [0.1, 0.2]], r"\[0\]\[1\] must be an accuracy in \[0, 1\]"),
    ([[-0.1]], "in \\[0, 1\\]"),
    ([[float("nan")]], "in \\[0, 1\\]"),
    ([["0.5"]], "must be a number"),
    ([[True]], "must be a number"),
    ("abc", "non-empty"),
])
def test_bad_matrices_are_refused(matrix, match):
    with pytest.raises(ValueError, match=match):
        M.continual_metrics(matrix)


def test_numpy_and_torch_inputs():
    import numpy as np
    import torch

    assert M.continual_metrics(np.array(R3), np.array([0.1, 0.0, 0.3])) == M.continual_metrics(R3, [0.1, 0.0, 0.3])
    assert M.backward_transfer(torch.tensor([[1.0, 0.0], [0.5, 1.0]])) == pytest.approx(-0.5)
    with pytest.raises(ValueError, match="square"):
        M.continual_metrics(np.zeros((2, 3)))


def test_bad_baselines_are_refused():
    with pytest.raises(ValueError, match="baseline has 2 values but the accuracy matrix has 3 tasks"):
        M.continual_metrics(R3, baseline=[0.1, 0.2])
    with pytest.raises(ValueError, match=r"baseline\[1\]"):
        M.continual_metrics(R3, baseline=[0.1, 2.0, 0.0])


def test_matrix_from_predictions():
    refs = [["1", "2"], ["a", "b", "c", "d"]]
    preds = [[["1", "x"], ["a", "", "", ""]], [[" 1 ", "2"], ["a", "b", "C", "d"]]]  # case counts, spaces do not
    assert M.matrix_from_predictions(preds, refs) == [[0.5, 0.25], [1.0, 0.75]]
    with pytest.raises(ValueError, match="stage 1, task 0: predictions has 1 items but references has 2"):
        M.matrix_from_predictions([preds[0], [["1"], preds[1][1]]], refs)
    with pytest.raises(ValueError, match="1 stages but task_references has 2 tasks"):
        M.matrix_from_predictions(preds[:1], refs)


# --------------------------------------------------------------------------------------- the evaluate module

def _env(tmp_path: Path) -> dict:
    env = dict(os.environ)
    for var in ("HF_MODULES_CACHE", "HF_EXT_NO_METRIC_INSTALL", "XDG_CACHE_HOME"):
        env.pop(var, None)
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="1", HF_EVALUATE_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    return env


def test_load_by_name_offline_in_fresh_process_and_run_card_doctests(tmp_path):
    readme = Path(hm.path("tool_cl")) / "README.md"
    code = f"""
import doctest, re, sys, evaluate, hf_ext
tool_cl = evaluate.load("tool_cl")
mod = sys.modules[type(tool_cl).__module__]
assert "evaluate_modules" in mod.__file__, mod.__file__
print("LOADED_FROM", mod.__file__)
runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
runner.run(doctest.DocTestParser().get_doctest(mod._KWARGS_DESCRIPTION, {{}}, "kwargs", None, 0))
text = open({str(readme)!r}).read()
blocks = "\\n".join(re.findall(r"```python\\n(>>>.*?)```", text, flags=re.S))
t2 = doctest.DocTestParser().get_doctest(blocks, {{"tool_cl": tool_cl}}, "readme", None, 0)
runner.run(t2)
print("DOCTESTS", runner.summarize(verbose=False), len(t2.examples))
sys.exit(1 if runner.failures else 0)
"""
    proc = subprocess.run([sys.executable, "-c", code], env=_env(tmp_path), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert str(tmp_path / "hf_home" / "modules" / "evaluate_modules") in proc.stdout
    m = re.search(r"DOCTESTS TestResults\(failed=0, attempted=(\d+)\) (\d+)", proc.stdout)
    assert m and int(m.group(1)) >= 20 and int(m.group(2)) >= 4, proc.stdout


def test_module_conventions_and_thinness():
    import evaluate

    module = evaluate.load(hm.path("tool_cl"))
    params = inspect.signature(module._compute).parameters.values()
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    assert module.compute(accuracy_matrix=R3) == M.continual_metrics(R3)
    src = (Path(hm.path("tool_cl")) / "tool_cl.py").read_text()
    assert "from hf_ext.tool_cl.metrics import" in src and not re.search(r"^from \.", src, flags=re.M)
    assert "tool_cl" in hm.available()
    with pytest.raises(ValueError, match="not both"):
        module.compute(accuracy_matrix=R3, stage_predictions=[[["1"]]], task_references=[["1"]])
    with pytest.raises(ValueError, match="together"):
        module.compute(stage_predictions=[[["1"]]])
