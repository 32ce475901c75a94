"""MINI-LLM-style structured pruning: remove attention heads and MLP channels, reload with ``from_pretrained``."""

from .config import StructuredPruningConfig
from .quantizer import StructuredPruningQuantizer, prune_structured

__all__ = ["StructuredPruningConfig", "StructuredPruningQuantizer", "prune_structured"]
