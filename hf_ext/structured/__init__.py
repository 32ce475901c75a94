"""MINI-LLM-style structured pruning: remove attention heads and MLP channels, reload with ``from_pretrained``."""

from .config import StructuredPruningConfig
from .gate_gradient import GradientAgreement, gradient_agreement
from .quantizer import StructuredPruningQuantizer, prune_structured

__all__ = ["GradientAgreement", "StructuredPruningConfig", "StructuredPruningQuantizer", "gradient_agreement",
           "prune_structured"]
