"""The speculative-decoding table of ``benchmarks/speculative.py`` on a GPU (``--device cuda``), for one run on a
GPU machine: the same methods, rounds and checks, with a training budget and batch sizes a GPU affords.

    python benchmarks/gpu_speculative.py            # writes benchmarks/results/gpu_speculative.md + .png
    python benchmarks/gpu_speculative.py --smoke    # dry run on tiny models (falls back to the CPU without CUDA)

Every argument of ``speculative.py`` can be given after these defaults (later ones win).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import speculative  # noqa: E402

GPU_DEFAULTS = ["--device", "cuda", "--results-name", "gpu_speculative", "--batch-sizes", "1", "4", "--sampling",
                "--layers", "1", "2", "4", "--train-samples", "256", "--train-steps", "400", "--train-batch", "16",
                "--lr", "1e-3", "--rounds", "5"]

if __name__ == "__main__":
    sys.exit(speculative.main(GPU_DEFAULTS + sys.argv[1:]))
