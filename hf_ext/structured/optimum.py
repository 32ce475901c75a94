"""Optimum-style entry point for MINI-LLM structured pruning.

    quantizer = OptimumStructuredPruner.from_pretrained("facebook/opt-125m")
    quantizer.quantize(save_dir="out", quantization_config=StructuredPruningConfig(...))
"""

from __future__ import annotations

from ..common.optimum import HfExtOptimumQuantizer
from .config import StructuredPruningConfig


class OptimumStructuredPruner(HfExtOptimumQuantizer):
    """An ``optimum.quantization_base.OptimumQuantizer`` taking a ``StructuredPruningConfig``
    (see :class:`~hf_ext.common.optimum.HfExtOptimumQuantizer`)."""

    config_class = StructuredPruningConfig
