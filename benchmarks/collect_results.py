"""Concatenate ``benchmarks/results/*.md`` (one section per benchmark script) into ``benchmarks/RESULTS.md``."""

from __future__ import annotations

import os
from pathlib import Path

ORDER = [
    "foundation", "compression", "compression_disk", "llmc_baseline", "structured", "structured_speed", "any_precision",
    "gpu_any_precision", "speculative", "samia", "samia_cpu", "samia_cuda", "serving", "isara", "isara_cuda",
    "tool_cl", "tool_cl_gpu", "tiered_cache", "tiered_cache_scale", "gpu_tiered_cache",
]
HEADER = """# Measured results

Every section below was written by the benchmark script it names (`make bench` runs them all), with the exact
command, the machine and the date. Each compares hf-ext against the baseline a user would otherwise pick, in the
same run. Numbers are what was measured, including where we lose.

Machine: a 2-core Intel Xeon VM with 24 GiB and no GPU; two sections ran on lent GPUs (the any-precision kernel on an
H200, SaMIA on an H100) and say so. Many sections were measured on 2026-11-26 before 10:30 UTC while six jobs shared
those 2 cores (load average 12-18): their wall times are inflated and say so; where a section gives CPU seconds,
those are the comparable figure. Sections dated 10:30 UTC or later ran on a nearly idle machine. Since 2026-12-01 a
timed result counts only when the load average stayed at or below 1.5; older sections flagged "Withdrawn" or
"Qualified" say which of their claims no longer stand. The 2026-12-01 sections ran one at a time with nothing else
on the machine; the first of them (tiered_cache) still used a rule that also counted the benchmark's own two
threads at the end, and is flagged by it (1.21 before the start, 1.51 at the end); later sections flag only a load
above 1.5 before the start, when other jobs were running.
"""


def _as_section(text: str) -> str:
    """Shift a file's headings so its top heading is a level-2 section of RESULTS.md."""
    lines = text.strip().splitlines()
    top = min((len(x) - len(x.lstrip("#")) for x in lines if x.startswith("#")), default=2)
    shift = 2 - top
    if shift > 0:
        lines = ["#" * shift + x if x.startswith("#") else x for x in lines]
    return "\n".join(lines)


def main() -> None:
    here = Path(__file__).resolve().parent
    rank = lambda p: (ORDER.index(p.stem) if p.stem in ORDER else 99, p.stem)  # noqa: E731
    files = sorted((here / "results").glob("*.md"), key=rank)
    text = HEADER + "".join("\n" + _as_section(f.read_text()) + "\n" for f in files)
    tmp = here / "RESULTS.md.tmp"
    tmp.write_text(text)
    os.replace(tmp, here / "RESULTS.md")


if __name__ == "__main__":
    main()
