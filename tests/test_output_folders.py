"""``--out`` never deletes a user's files: non-empty folders are refused without --overwrite, writes are atomic."""

import json
import signal
import subprocess
import sys
import textwrap

import pytest

from hf_ext.common.utils import MANIFEST, atomic_dir, check_output_dir


@pytest.fixture(scope="module")
def saved_opt(tiny_model_dir):
    return tiny_model_dir("opt", name="src")


def _commands(src, calib, out):
    small = ["--calibration", calib, "--n-samples", "2", "--seqlen", "32"]
    return {
        "compress": ["compress", str(src), "--sparsity", "0.5", *small, "--out", str(out)],
        "compress --low-memory": ["compress", str(src), "--sparsity", "0.5", "--low-memory", *small, "--out", str(out)],
        "prune": ["prune", str(src), "--ratio", "0.3", "--criterion", "magnitude", *small, "--out", str(out)],
        "anyprec": ["anyprec", str(src), "--seed-bits", "2", "--max-bits", "3", *small, "--eval-tokens", "0",
                    "--out", str(out)],
    }


@pytest.mark.parametrize("command", ["compress", "compress --low-memory", "prune", "anyprec"])
def test_unrelated_file_survives_every_command(saved_opt, calib, tmp_path, command, capsys):
    from hf_ext.cli import main

    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    argv = _commands(saved_opt, calib, out)[command]
    assert main(argv) == 2  # refused: not empty
    assert "not empty" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert main([*argv, "--overwrite"]) == 0
    assert (out / "notes.txt").read_text() == "mine" and (out / "config.json").is_file()
    first = set(json.loads((out / MANIFEST).read_text()))
    assert "notes.txt" not in first and "config.json" in first
    assert main([*argv, "--overwrite"]) == 0  # re-running into our own output keeps every file we write
    assert (out / "notes.txt").read_text() == "mine"
    assert first <= {p.name for p in out.iterdir()}


def test_atomic_dir_refuses_non_empty_and_files(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        check_output_dir(tmp_path / "f")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "keep").write_text("k")
    with pytest.raises(FileExistsError, match="not empty"), atomic_dir(tmp_path / "d"):
        raise AssertionError("must not be reached")
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["keep"]
    (tmp_path / "empty").mkdir()
    with atomic_dir(tmp_path / "empty") as tmp:
        (tmp / "a").write_text("1")
    assert (tmp_path / "empty" / "a").read_text() == "1"


def test_overwrite_replaces_only_our_files(tmp_path):
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        (tmp / "old_shard.bin").write_text("old")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "x").write_text("x")
    (target / "user.txt").write_text("u")
    (target / "user_dir").mkdir()
    (target / "user_dir" / "y").write_text("y")
    with atomic_dir(target, overwrite=True) as tmp:
        (tmp / "new_shard.bin").write_text("new")
    names = sorted(p.name for p in target.iterdir())
    assert names == sorted([MANIFEST, "new_shard.bin", "user.txt", "user_dir"])
    assert (target / "user_dir" / "y").read_text() == "y"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary sibling left behind


_KILLED_WRITER = textwrap.dedent("""
    import os, sys, time
    from hf_ext.common.utils import atomic_dir
    with atomic_dir(sys.argv[1], overwrite=True) as tmp:
        (tmp / "model.safetensors").write_bytes(b"half")
        print("writing", flush=True)
        time.sleep(60)
""")


def test_killed_mid_write_leaves_previous_contents(tmp_path):
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        (tmp / "model.safetensors").write_bytes(b"complete")
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert (target / "model.safetensors").read_bytes() == b"complete"
    with atomic_dir(target, overwrite=True) as tmp:  # the stale temporary sibling does not block the next write
        (tmp / "model.safetensors").write_bytes(b"next")
    assert (target / "model.safetensors").read_bytes() == b"next"
