"""Any-Precision LLM (Park et al., ICML 2024): one checkpoint holding every width from a seed to a parent model
as nested bitplanes, switchable at run time with ``model.set_precision(k)``."""

from __future__ import annotations

from .api import from_pretrained, quantize
from .config import AnyPrecisionConfig
from .layer import AnyPrecisionLinear, PrecisionNotLoadedError
from .model import evaluate_precisions, memory_report, set_precision
from .quantizer import AnyPrecisionQuantizer, compute_fisher

__all__ = [
    "AnyPrecisionConfig", "AnyPrecisionLinear", "AnyPrecisionQuantizer", "PrecisionNotLoadedError", "compute_fisher",
    "evaluate_precisions", "from_pretrained", "memory_report", "quantize", "set_precision",
]
