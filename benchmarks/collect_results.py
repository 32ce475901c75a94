"""Concatenate ``benchmarks/results/*.md`` (one section per benchmark script) into ``benchmarks/RESULTS.md``."""

from __future__ import annotations

import os
from pathlib import Path

ORDER = ["foundation", "compression", "llmc_baseline", "structured", "any_precision", "gpu_any_precision",
         "speculative", "samia"]
HEADER = """# Measured results

Every section below was written by the benchmark script it names (`make bench` runs them all), with the exact
command, the machine and the date. Each compares hf-ext against the baseline a user would otherwise pick, in the
same run. Numbers are what was measured, including where we lose.
"""


def main() -> None:
    here = Path(__file__).resolve().parent
    rank = lambda p: (ORDER.index(p.stem) if p.stem in ORDER else 99, p.stem)  # noqa: E731
    files = sorted((here / "results").glob("*.md"), key=rank)
    text = HEADER + "".join("\n" + f.read_text().strip() + "\n" for f in files)
    tmp = here / "RESULTS.md.tmp"
    tmp.write_text(text)
    os.replace(tmp, here / "RESULTS.md")


if __name__ == "__main__":
    main()
