"""MINI-LLM-style structured pruning: remove attention heads and MLP channels, reload with ``from_pretrained``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..common.import_utils import lazy_getattr

_import_structure: dict[str, list[str]] = {
    "config": ["StructuredPruningConfig"],
    "gate_gradient": ["GradientAgreement", "gradient_agreement"],
    "quantizer": ["StructuredPruningQuantizer", "prune_structured"],
    "optimum": ["OptimumStructuredPruner"],
}
__all__ = sorted(n for names in _import_structure.values() for n in names)
__getattr__ = lazy_getattr(__name__, globals(), _import_structure)

if TYPE_CHECKING:
    from .config import StructuredPruningConfig
    from .gate_gradient import GradientAgreement, gradient_agreement
    from .optimum import OptimumStructuredPruner
    from .quantizer import StructuredPruningQuantizer, prune_structured
