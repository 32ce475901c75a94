"""Shared benchmark helpers: machine description and writing a results section."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def cpu_name() -> str:
    """The CPU model from ``lscpu`` (or ``platform.processor()``)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (StopIteration, OSError):
        return platform.processor() or "unknown CPU"


def machine() -> str:
    model = cpu_name()
    import torch

    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{model}, {os.cpu_count()} cores{gpu}; torch {torch.__version__}, Python {platform.python_version()}"


LOAD_LIMIT = 1.5
"""A timed result counts only when the 1-minute load average stayed at or below this (2 cores)."""

_LOAD_AT_START = os.getloadavg()[0]


def load_average() -> float:
    return os.getloadavg()[0]


def versions(*names: str) -> str:
    """``name version`` for each installed distribution among ``names`` (plus torch and transformers)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for n in ("torch", "transformers", *names):
        try:
            out.append(f"{n} {version(n)}")
        except PackageNotFoundError:
            continue
    return ", ".join(dict.fromkeys(out))


def write_section(name: str, title: str, body: str, packages: tuple[str, ...] = (),
                  load_before: float | None = None) -> Path:
    """Write ``results/<name>.md`` with the command, machine, date, load average before / after and versions, then
    ``body`` (markdown). ``load_before`` defaults to the load when this module was imported (the script's start).
    The load before the run measures other jobs: above :data:`LOAD_LIMIT` the section is flagged, and its timings
    must be rerun before anyone quotes them. The load after includes the benchmark's own threads (2 on 2 cores)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    command = " ".join([Path(sys.executable).name, *sys.argv])
    before = _LOAD_AT_START if load_before is None else load_before
    after = load_average()
    flag = "" if before <= LOAD_LIMIT else (
        f" **other jobs were running (above {LOAD_LIMIT} before the start): timings in this section are not valid; "
        "rerun on an idle machine**")
    text = (
        f"## {title}\n\n- command: `{command}`\n- machine: {machine()}\n"
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}\n"
        f"- load average (1 min): {before:.2f} before the start, {after:.2f} at the end (the latter includes this "
        f"benchmark's own threads){flag}\n"
        f"- versions: {versions(*packages)}\n\n{body.strip()}\n"
    )
    path = RESULTS_DIR / f"{name}.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def table(header: list[str], rows: list[list]) -> str:
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


CGROUP_ROOT = Path("/sys/fs/cgroup/memory")


def run_measured(cmd: list[str], limit_mib: int | None = None, cwd: str | os.PathLike | None = None) -> dict:
    """Run ``cmd``; wall time, its own peak RSS (wait4, not RUSAGE_CHILDREN, which is the largest of every child
    so far) and exit status, inside a cgroup-v1 memory cgroup when a limit is given (needs root)."""
    group = None
    if limit_mib is not None:
        group = CGROUP_ROOT / f"hf_ext_bench_{os.getpid()}"
        group.mkdir(exist_ok=True)
        (group / "memory.limit_in_bytes").write_text(str(limit_mib << 20))
        swap = group / "memory.memsw.limit_in_bytes"
        if swap.exists():
            swap.write_text(str(limit_mib << 20))

    def enter() -> None:
        if group is not None:
            (group / "cgroup.procs").write_text(str(os.getpid()))

    start = time.perf_counter()
    proc = subprocess.Popen(cmd, preexec_fn=enter, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    oom = False
    if group is not None:
        control = (group / "memory.oom_control").read_text() if (group / "memory.oom_control").exists() else ""
        kills = [int(line.split()[1]) for line in control.splitlines() if line.startswith("oom_kill ")]
        counters = [group / "memory.failcnt", group / "memory.memsw.failcnt"]
        fails = [int(f.read_text()) for f in counters if f.exists()]
        oom = os.WIFSIGNALED(status) and (any(kills) or any(fails))
        group.rmdir()
    code = os.waitstatus_to_exitcode(status)
    print(out[-1500:], flush=True)
    return {"code": code, "seconds": wall, "peak_mib": usage.ru_maxrss / 1024, "oom": oom, "tail": out[-400:]}
