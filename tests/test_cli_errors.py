"""Every bad input ends in one ``hf-ext: error: ...`` line, exit code 2, no traceback, before heavy work."""

import json
import subprocess
import sys

import pytest


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny_model_dir):
    path = tiny_model_dir("llama")
    long = tmp_path_factory.mktemp("mia") / "long.jsonl"
    rows = [{"input": "word " * 400, "label": 1}, {"input": "short text here", "label": 0}]
    long.write_text("".join(json.dumps(r) + "\n" for r in rows))
    short = long.with_name("short.jsonl")
    short.write_text("".join(json.dumps({"input": t, "label": i % 2}) + "\n" for i, t in enumerate(["one", "a b c d"])))
    return path, long, short


CASES = {
    "missing model folder": (["eval", "ppl", "--model", "/no/such/model"], "does not exist"),
    "misspelled default": (["eval", "ppl", "--model", "defualt"], "did you mean 'default'"),
    "text longer than context": (["eval", "mia", "--model", "{model}", "--data", "{long}", "--methods", "loss"],
                                 "more than the model's context of 256"),
    "samia short text before the likelihood pass": (
        ["eval", "mia", "--model", "{model}", "--data", "{short}", "--methods", "loss", "samia"], "too short"),
    "stride 0": (["eval", "ppl", "--model", "{model}", "--stride", "0"], "stride must be in 1..seqlen"),
    "max tokens 0": (["eval", "ppl", "--model", "{model}", "--max-tokens", "0"], "max_tokens must be >= 1"),
    "demo only bogus": (["demo", "--model", "{model}", "--only", "bogus"], "no demo row matches"),
    "anyprec precision 9": (["anyprec", "{model}", "--precision", "9", "--out", "{tmp}/o"], "is not stored"),
    "float for an int field": (["eval", "mia", "--model", "{model}", "--data", "{short}", "--num-samples", "2.5"],
                               "invalid int value"),
    "unknown subcommand": (["bogus"], "invalid choice"),
    "non-empty --out": (["prune", "{model}", "--out", "{model}"], "not empty"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_error_line(saved, tmp_path, case):
    model, long, short = saved
    argv, message = CASES[case]
    argv = [a.format(model=model, long=long, short=short, tmp=tmp_path) for a in argv]
    res = subprocess.run([sys.executable, "-m", "hf_ext.cli", *argv], capture_output=True, text=True, timeout=300,
                         env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path.parent)})
    assert res.returncode == 2, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("hf-ext: error:")]
    assert len(errors) == 1 and message in errors[0], res.stderr[-2000:]


@pytest.mark.parametrize("cls, field", [("hf_ext.privacy.samia.SamiaConfig", "num_samples"),
                                        ("hf_ext.privacy.attacks.AttackConfig", "batch_size"),
                                        ("hf_ext.speculative.config.SpeculativeConfig", "max_draft_tokens")])
def test_float_for_int_field_and_round_trip(cls, field):
    import importlib

    module, name = cls.rsplit(".", 1)
    config_cls = getattr(importlib.import_module(module), name)
    with pytest.raises(ValueError, match=f"{name}.{field} must be an integer, got 2.5"):
        config_cls(**{field: 2.5})
    cfg = config_cls()
    assert config_cls.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="Unknown .* field"):
        config_cls.from_dict({**cfg.to_dict(), "nosuch": 1})
