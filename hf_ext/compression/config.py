"""``CompressionConfig``: unstructured / N:M sparsity with a layerwise allocation, optional joint low-bit quantization.

Choices that the papers leave open are fields with documented defaults (see each field's help): the MRP step,
tolerance and sample size, the Hessian allocation's number of levels and spread, and pruning per output row for
the magnitude and Wanda metrics.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from typing import ClassVar

from ..common.quantizer import HfExtQuantizationConfig

ALLOCATIONS = ("uniform", "owl", "mrp", "hessian")
METRICS = ("magnitude", "wanda", "sparsegpt", "alps")
MRP_MODES = ("measured", "simulated")
RESIDENT = ("dense", "packed")
_NM = re.compile(r"^(\d+):(\d+)$")


def parse_nm(structure: str) -> tuple[int, int] | None:
    """``"unstructured"`` -> None; ``"N:M"`` -> (N, M): at most N weights kept in every M consecutive inputs."""
    if structure == "unstructured":
        return None
    match = _NM.match(str(structure))
    if not match:
        raise ValueError(f"structure must be 'unstructured' or 'N:M' (e.g. '2:4'), got {structure!r}.")
    n, m = int(match.group(1)), int(match.group(2))
    if not 0 < n < m:
        raise ValueError(f"Invalid N:M structure {structure!r}: need 0 < N < M.")
    return n, m


@dataclass
class CompressionConfig(HfExtQuantizationConfig):
    """Sparsity allocation + pruning + optional quantization, applied by ``from_pretrained(..., quantization_config=)``.

    Args:
        sparsity: Target fraction of zero weights over all prunable decoder linears, in [0, 1).
        allocation: How the budget is spread over decoder blocks: "uniform", "owl", "mrp" or "hessian".
        metric: Pruning score: "magnitude", "wanda", "sparsegpt" (OBS with error compensation) or "alps" (ADMM
            support + conjugate-gradient weights on the layer reconstruction problem; much slower, see ``alps.py``).
        structure: "unstructured" or "N:M" (N kept in each M consecutive inputs; sparsity must be 1 - N/M).
        bits: Bits of the kept weights (2..8) or None for no quantization.
        group_size: Input columns per quantization group (None: one group per row).
        calibration: Calibration text: "pydocs", "wikitext2", "c4" or a local file / folder.
        n_samples, seqlen, seed: Calibration windows.
        owl_m, owl_lambda: OWL outlier threshold (multiple of the mean score) and sparsity spread.
        mrp_mode: "measured" (default, the paper's procedure: after each step the block is pruned again at its new
            sparsity with the chosen metric, SparseGPT's update included, and its non-outlier ratio is measured on
            every remaining weight) or "simulated" (fast: dense-model scores, the sparse block simulated by masking
            a sample of them).
        mrp_step, mrp_tolerance, mrp_max_sparsity, mrp_sample_size: MRP iteration parameters (our choices).
        refit_iters: Conjugate-gradient steps re-solving the kept weights on the fixed mask (0: off), any metric
            (for "alps", its final CG steps: 0 means ALPS's 10).
        resident: "dense" keeps a dense weight cache per layer (fastest forward, as large as the dense model in
            memory); "packed" keeps only the packed buffers and dequantizes in each forward.
        hessian_levels, hessian_spread: Hessian allocation: clusters of log-errors and sparsity spread (our choices).
        modules_to_not_convert: Module name fragments left dense (the LM head; embeddings are never pruned).
    Fields written after compression (needed to reload): ``block_sparsities``, ``achieved_sparsity``,
    ``compressed_layers`` (module name -> number of kept weights), ``compute_dtype``.
    """

    quant_method: ClassVar[str] = "hf_ext_compression"

    sparsity: float = field(default=0.5, metadata={"help": "Target global sparsity over prunable linears, in [0, 1)."})
    allocation: str = field(default="uniform", metadata={"help": f"Layerwise allocation, one of {ALLOCATIONS}."})
    metric: str = field(default="wanda", metadata={"help": f"Pruning metric, one of {METRICS}."})
    structure: str = field(default="unstructured", metadata={"help": "'unstructured' or 'N:M' (N kept per M)."})
    bits: int | None = field(default=None, metadata={"help": "Bits of the kept weights (2..8); None: not quantized."})
    group_size: int | None = field(default=128, metadata={"help": "Quantization group along inputs (None: per row)."})
    calibration: str = field(default="pydocs", metadata={"help": "Calibration text source (name or local path)."})
    n_samples: int = field(default=128, metadata={"help": "Calibration windows."})
    seqlen: int = field(default=512, metadata={"help": "Tokens per calibration window."})
    seed: int = field(default=0, metadata={"help": "Seed of the calibration window sampling and MRP sampling."})
    batch_size: int = field(default=1, metadata={"help": "Calibration windows per block forward."})
    owl_m: float = field(default=5.0, metadata={"help": "Outlier threshold M (score > M * mean) for OWL and MRP."})
    owl_lambda: float = field(default=0.08, metadata={"help": "OWL: block sparsities lie in [S - lambda, S + lambda]."})
    mrp_step: float = field(
        default=0.01, metadata={"help": "MRP (our choice): sparsity added to the most redundant block(s) per step."}
    )
    mrp_tolerance: float = field(
        default=0.0025,
        metadata={"help": "MRP (our choice): blocks whose non-outlier ratio is within this of the highest are "
                          "pruned in the same step."},
    )
    mrp_max_sparsity: float = field(default=0.95, metadata={"help": "MRP (our choice): cap of any block's sparsity."})
    mrp_sample_size: int = field(
        default=65536, metadata={"help": "MRP (our choice): score entries sampled per linear to measure ratios."}
    )
    mrp_mode: str = field(
        default="measured", metadata={"help": f"MRP redundancy measurement, one of {MRP_MODES} (see the docstring)."}
    )
    refit_iters: int = field(
        default=0, metadata={"help": "Conjugate-gradient steps refitting the kept weights on the fixed mask against "
                                     "the layer Hessian (0: no refit; 10 is ALPS's choice)."}
    )
    resident: str = field(
        default="dense", metadata={"help": f"What stays in memory, one of {RESIDENT}: 'dense' weight cache or "
                                           "'packed' only (dequantized per forward)."}
    )
    hessian_levels: int = field(
        default=5, metadata={"help": "Hessian allocation (our choice): clusters of the log10 estimated errors."}
    )
    hessian_spread: float = field(
        default=0.08, metadata={"help": "Hessian allocation (our choice): sparsities span [S - spread, S + spread]."}
    )
    dampening: float = field(default=0.01, metadata={"help": "SparseGPT damping as a fraction of mean diag(H)."})
    blocksize: int = field(default=128, metadata={"help": "SparseGPT lazy-update block of columns."})
    modules_to_not_convert: list[str] = field(
        default_factory=lambda: ["lm_head"], metadata={"help": "Name fragments of linears kept dense."}
    )
    tokenizer: str | None = field(
        default=None, metadata={"help": "Tokenizer path for calibration (default: the checkpoint's).",
                                "serialize": False}
    )
    # ------------------------------------------------------------------------------ written after compression
    block_sparsities: list[float] | None = field(
        default=None, metadata={"help": "Sparsity per decoder block: written by compression; given up front, it is "
                                        "used as the allocation (e.g. one computed before) instead of computing one."}
    )
    achieved_sparsity: float | None = field(default=None, metadata={"help": "Measured global sparsity of the masks."})
    compressed_layers: dict[str, int] | None = field(
        default=None, metadata={"help": "Compressed module name -> kept weights (shapes for reloading)."}
    )
    compute_dtype: str | None = field(default=None, metadata={"help": "dtype of the original weights."})
    checksums: dict[str, dict[str, str]] | None = field(
        default=None, metadata={"help": "Compressed module name -> buffer -> digest, checked on reload."}
    )
    base_model: str | None = field(default=None, metadata={"help": "Name or path of the model that was compressed."})
    eval_results: dict | None = field(default=None, metadata={"help": "Perplexity measured after compression."})

    def validate(self) -> None:
        for f in fields(self):  # NaN passes every comparison below: refuse it first, by name
            value = getattr(self, f.name)
            if isinstance(value, float) and math.isnan(value):
                raise ValueError(f"{f.name} must be a number, got NaN.")
        if (isinstance(self.sparsity, bool) or not isinstance(self.sparsity, (int, float))
                or not 0.0 <= float(self.sparsity) < 1.0):
            raise ValueError(f"sparsity must be in [0, 1), got {self.sparsity!r}.")
        if self.allocation not in ALLOCATIONS:
            raise ValueError(f"Unknown allocation {self.allocation!r}; choose one of {ALLOCATIONS}.")
        if self.metric not in METRICS:
            raise ValueError(f"Unknown metric {self.metric!r}; choose one of {METRICS}.")
        if self.mrp_mode not in MRP_MODES:
            raise ValueError(f"Unknown mrp_mode {self.mrp_mode!r}; choose one of {MRP_MODES}.")
        if self.resident not in RESIDENT:
            raise ValueError(f"Unknown resident {self.resident!r}; choose one of {RESIDENT}.")
        nm = parse_nm(self.structure)
        if nm is not None:
            expected = 1 - nm[0] / nm[1]
            if abs(float(self.sparsity) - expected) > 1e-6:
                raise ValueError(
                    f"structure {self.structure!r} means sparsity {expected:g}, but sparsity is {self.sparsity!r}."
                )
            if self.allocation != "uniform":
                raise ValueError(f"structure {self.structure!r} needs allocation 'uniform', got {self.allocation!r}.")
        if self.bits is not None and (not isinstance(self.bits, int) or not 2 <= self.bits <= 8):
            raise ValueError(f"bits must be an integer in 2..8 or None, got {self.bits!r}.")
        if self.group_size is not None and (not isinstance(self.group_size, int) or self.group_size <= 0):
            raise ValueError(f"group_size must be a positive integer or None, got {self.group_size!r}.")
        if not self.calibration:
            raise ValueError("calibration must name a text source (e.g. 'pydocs' or a local file), got nothing.")
        self.check_positive_ints("n_samples", "seqlen", "batch_size", "mrp_sample_size", "hessian_levels", "blocksize")
        self.check_non_negative("refit_iters", integer=True)
        if self.owl_m <= 0:
            raise ValueError(f"owl_m must be > 0, got {self.owl_m!r}.")
        self.check_non_negative("owl_lambda", "hessian_spread", "mrp_tolerance", "dampening")
        if not 0 < self.mrp_step < 1:
            raise ValueError(f"mrp_step must be in (0, 1), got {self.mrp_step!r}.")
        if not 0 < self.mrp_max_sparsity < 1:
            raise ValueError(f"mrp_max_sparsity must be in (0, 1), got {self.mrp_max_sparsity!r}.")
        if self.allocation == "mrp" and self.mrp_max_sparsity < float(self.sparsity):
            raise ValueError(f"mrp_max_sparsity ({self.mrp_max_sparsity!r}) must be >= sparsity "
                             f"({self.sparsity!r}) with allocation 'mrp'.")
        if self.block_sparsities is not None:
            bs = self.block_sparsities
            if not isinstance(bs, (list, tuple)) or any(
                    isinstance(x, bool) or not isinstance(x, (int, float)) or math.isnan(x) for x in bs):
                raise ValueError(f"block_sparsities must be a list of numbers, got {bs!r}.")
            if any(not 0 <= x < 1 for x in bs):
                raise ValueError(f"block_sparsities must lie in [0, 1), got {list(bs)}.")

    @property
    def nm(self) -> tuple[int, int] | None:
        return parse_nm(self.structure)

    def describe(self) -> str:
        """One-line summary for logs, reports and model cards."""
        quant = f", {self.bits}-bit (group {self.group_size})" if self.bits else ""
        quant += f", refit {self.refit_iters} CG steps" if self.refit_iters else ""
        return (f"{self.sparsity:.0%} {self.structure} sparsity, {self.allocation} allocation, {self.metric} metric"
                f"{quant}; calibration {self.calibration} ({self.n_samples} x {self.seqlen} tokens)")
