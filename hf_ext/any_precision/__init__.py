"""Any-Precision LLM (Park et al., ICML 2024): one checkpoint holding every width from a seed to a parent model
as nested bitplanes, switchable at run time with ``model.set_precision(k)``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..common.import_utils import lazy_getattr

_import_structure: dict[str, list[str]] = {
    "api": ["from_pretrained", "quantize"],
    "config": ["AnyPrecisionConfig"],
    "layer": ["AnyPrecisionLinear", "PrecisionNotLoadedError"],
    "model": ["evaluate_precisions", "memory_report", "set_precision"],
    "quantizer": ["AnyPrecisionQuantizer", "compute_fisher"],
    "optimum": ["OptimumAnyPrecisionQuantizer"],
}
__all__ = sorted(n for names in _import_structure.values() for n in names)
__getattr__ = lazy_getattr(__name__, globals(), _import_structure)

if TYPE_CHECKING:
    from .api import from_pretrained, quantize
    from .config import AnyPrecisionConfig
    from .layer import AnyPrecisionLinear, PrecisionNotLoadedError
    from .model import evaluate_precisions, memory_report, set_precision
    from .optimum import OptimumAnyPrecisionQuantizer
    from .quantizer import AnyPrecisionQuantizer, compute_fisher
