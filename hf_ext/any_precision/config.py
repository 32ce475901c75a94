"""Configuration of Any-Precision LLM quantization (Park et al., ICML 2024).

Defaults follow the paper where it states them (seed 3 bits, parent 8 bits, seq_len 512) and are smaller where the
paper's calibration (100 x 512 tokens of C4) is out of reach of a CPU; those are our choices and say so in their help.
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..common.quantizer import HfExtQuantizationConfig

MIN_BITS, MAX_BITS = 2, 8
CACHE_POLICIES = ("none", "active", "all")
CPU_KERNELS = ("blocked", "gemv")


def is_bits(value: Any) -> bool:
    """An integer bit width in ``MIN_BITS..MAX_BITS`` (``4.0``, ``4.7``, ``"4"`` and ``True`` are not)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and MIN_BITS <= value <= MAX_BITS


def check_bits(value: Any, what: str = "precision") -> int:
    """``int(value)`` for an integer (Python or numpy), else ``ValueError``: ``4.7`` or ``"4"`` are refused, never
    truncated or parsed. Whether the width is held is for the caller to check."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise ValueError(f"{what} must be an integer number of bits, got {value!r} ({type(value).__name__}).")
    return int(value)


@dataclass
class AnyPrecisionConfig(HfExtQuantizationConfig):
    """One checkpoint holding every precision from ``seed_bits`` to ``max_bits`` as nested bitplanes.

    Args:
        seed_bits: Bits of the seed model (per-row weighted k-means with ``2**seed_bits`` centroids).
        max_bits: Bits of the parent model; every width from ``seed_bits`` to ``max_bits`` is stored.
        calibration: Text source for the Fisher (squared-gradient) weights: "pydocs", a file or a folder.
        n_samples: Calibration windows.
        seqlen: Tokens per calibration window.
        seed: Seed of the calibration window offsets and of the k-means++ draws.
        kmeans_iterations: Lloyd iterations (per round) of the seed k-means.
        split_method: How upscaling splits a cluster in two: "exact" (optimal position) or "lloyd".
        split_iterations: Lloyd iterations of each split when ``split_method="lloyd"``.
        lut_dtype: Storage dtype of the per-row lookup tables.
        non_quantized_dtype: Checkpoint dtype of the unquantized parts (embeddings, LM head, norms, biases).
        precisions: Precisions to load from a saved checkpoint (None: all); only planes up to the largest are read.
        cache_dequantized: Dense weight cache: "none" (default: forwards dequantize row blocks into one shared
            working buffer, nothing dense stays resident), "active" or "all" (dense weights kept per precision).
        cpu_kernel: CPU compute for few tokens without a dense cache: "blocked" (default) or "gemv" (numba).
        modules_to_not_convert: Substrings of linear names left in full precision.
        tokenizer: Tokenizer path for calibration when the model folder has none (not serialized).
        checksums: Filled by quantization: per-layer digests of every plane and table, verified on load.
        available_precisions: The precisions a checkpoint holds when not all of seed_bits..max_bits.
        default_precision: Precision active after loading (None: the largest loaded).
        metrics: Filled by ``evaluate_precisions``: per precision, measured perplexity and memory (for the card).
    """

    quant_method: ClassVar[str] = "hf_ext_any_precision"

    seed_bits: int = field(default=3, metadata={"help": "Bits of the seed model (paper default 3)."})
    max_bits: int = field(default=8, metadata={"help": "Bits of the parent model (paper default 8)."})
    calibration: str = field(default="pydocs", metadata={"help": "Calibration text source (paper: c4)."})
    n_samples: int = field(
        default=16, metadata={"help": "Calibration windows; our CPU default (paper: 100). Each costs one backward."}
    )
    seqlen: int = field(default=512, metadata={"help": "Tokens per calibration window (paper: 512)."})
    seed: int = field(default=0, metadata={"help": "Seed of the calibration window offsets and k-means++ draws."})
    kmeans_iterations: int = field(
        default=50, metadata={"help": "Lloyd iterations per round of the seed k-means (official code: 50)."}
    )
    split_method: str = field(
        default="exact", metadata={"help": "Cluster split during upscaling: 'exact' (the optimal weighted 2-means "
                                   "position; the official code's choice) or 'lloyd' (the first pass's iterations)."}
    )
    split_iterations: int = field(
        default=10, metadata={"help": "Lloyd iterations of each split when split_method='lloyd' (our choice)."}
    )
    lut_dtype: str = field(
        default="float16", metadata={"help": "Lookup table storage: float16 (paper), bfloat16, float32, or int8 "
                                     "(uint8 codes on a per-row affine grid with an fp16 offset and step: half the "
                                     "bytes of fp16, rounding each centroid by at most half a step; opt-in)."}
    )
    non_quantized_dtype: str | None = field(
        default="float16",
        metadata={"help": "Checkpoint dtype of the parts left unquantized (embeddings, LM head when untied, norms, "
                  "biases): 'float16' (default, our choice: the embeddings dominate a small model's file and fp16 "
                  "keeps 3 more mantissa bits than bf16), 'bfloat16', 'float32', or None (each tensor's own dtype). "
                  "Quantization rounds them to it in memory too, so the saved model is the one measured; loading "
                  "casts them back to the model's compute dtype."},
    )
    precisions: list[int] | None = field(
        default=None,
        metadata={"help": "Precisions to load from a checkpoint (None: all). A loading attribute: pass "
                  "quantization_config=AnyPrecisionConfig(precisions=[3, 4]) to from_pretrained."},
    )
    cache_dequantized: str = field(
        default="none",
        metadata={"help": "Dense weight cache: 'none' (default, memory-honest: every forward dequantizes row blocks "
                  "into one shared working buffer), 'active' keeps the active precision's dense weight (rebuilt on "
                  "the first forward after a switch; faster, costs the dense bytes, reported by memory_report), "
                  "'all' keeps every precision used."},
    )
    cpu_kernel: str = field(
        default="blocked",
        metadata={"help": "CPU path for at most 8 tokens when no dense cache is kept: 'blocked' (dequantize row "
                  "blocks + matmul; bit-identical to the cached path) or 'gemv' (numba bitplane lookup GEMV from the "
                  "codes, no weight block written; float32-close). Our choice: 'blocked' by default."},
    )
    modules_to_not_convert: list[str] | None = field(
        default=None, metadata={"help": "Substrings of decoder linear names left unquantized."}
    )
    tokenizer: str | None = field(
        default=None, metadata={"help": "Tokenizer path for calibration.", "serialize": False}
    )
    checksums: dict[str, dict[str, str]] | None = field(
        default=None, metadata={"help": "Per-layer digests of every plane and table (set by quantization); also "
                                "the list of converted layers."}
    )
    available_precisions: list[int] | None = field(
        default=None, metadata={"help": "Precisions the checkpoint holds (None: seed_bits..max_bits); set when a "
                                "model loaded with fewer precisions is saved again."}
    )
    default_precision: int | None = field(
        default=None, metadata={"help": "Precision active after loading (None: the largest loaded)."}
    )
    metrics: dict[str, dict[str, Any]] | None = field(
        default=None, metadata={"help": "Measured perplexity and memory per precision (set by evaluate_precisions)."}
    )

    def validate(self) -> None:
        for name in ("seed_bits", "max_bits"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not MIN_BITS <= value <= MAX_BITS:
                raise ValueError(f"{name} must be an integer in {MIN_BITS}..{MAX_BITS}, got {value!r}.")
        if self.seed_bits > self.max_bits:
            raise ValueError(f"seed_bits ({self.seed_bits}) must not exceed max_bits ({self.max_bits}).")
        self.check_positive_ints("n_samples", "seqlen", "kmeans_iterations", "split_iterations")
        if self.split_method not in ("exact", "lloyd"):
            raise ValueError(f"split_method must be 'exact' or 'lloyd', got {self.split_method!r}.")
        if self.lut_dtype not in ("float16", "bfloat16", "float32", "int8"):
            raise ValueError(f"lut_dtype must be float16, bfloat16, float32 or int8, got {self.lut_dtype!r}.")
        if self.non_quantized_dtype not in (None, "float16", "bfloat16", "float32"):
            raise ValueError(f"non_quantized_dtype must be float16, bfloat16, float32 or None, got "
                             f"{self.non_quantized_dtype!r}.")
        if self.cpu_kernel not in CPU_KERNELS:
            raise ValueError(f"cpu_kernel must be one of {CPU_KERNELS}, got {self.cpu_kernel!r}.")
        if self.cache_dequantized not in CACHE_POLICIES:
            raise ValueError(f"cache_dequantized must be one of {CACHE_POLICIES}, got {self.cache_dequantized!r}.")
        if self.precisions is not None:
            bad = [p for p in self.precisions if not is_bits(p)]
            if bad or not self.precisions:
                raise ValueError(f"precisions must be a non-empty list of integer bits in {MIN_BITS}..{MAX_BITS}, "
                                 f"got {self.precisions!r}.")
            self.precisions = sorted({int(p) for p in self.precisions})
        if self.default_precision is not None:
            if not is_bits(self.default_precision):
                raise ValueError(f"default_precision must be an integer in {MIN_BITS}..{MAX_BITS}, got "
                                 f"{self.default_precision!r}.")
            self.default_precision = int(self.default_precision)
            if self.default_precision not in self.stored_precisions:
                raise ValueError(f"default_precision {self.default_precision} is not stored; the checkpoint holds "
                                 f"{self.stored_precisions}.")

    @property
    def stored_precisions(self) -> list[int]:
        """Every precision the checkpoint holds."""
        if self.available_precisions:
            return sorted(int(p) for p in self.available_precisions)
        return list(range(self.seed_bits, self.max_bits + 1))

    @property
    def loaded_precisions(self) -> list[int]:
        """The precisions to load; raises naming the stored ones when a requested width is not stored."""
        if self.precisions is None:
            return self.stored_precisions
        missing = [p for p in self.precisions if p not in self.stored_precisions]
        if missing:
            raise ValueError(f"Precisions {missing} are not stored in this checkpoint; it holds "
                             f"{self.stored_precisions} (seed_bits={self.seed_bits}, max_bits={self.max_bits}).")
        return list(self.precisions)

    def get_loading_attributes(self) -> dict[str, Any]:
        """Fields a ``quantization_config`` passed to ``from_pretrained`` overrides on a saved checkpoint."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        names = ("precisions", "cache_dequantized", "default_precision", "cpu_kernel")
        return {n: getattr(self, n) for n in names if getattr(self, n) != defaults[n]}
