"""Optimum-style entry point for compression (sparsity allocation, pruning, low-bit).

    quantizer = OptimumCompressionQuantizer.from_pretrained("facebook/opt-125m")
    quantizer.quantize(save_dir="out", quantization_config=CompressionConfig(...))
"""

from __future__ import annotations

from ..common.optimum import HfExtOptimumQuantizer
from .config import CompressionConfig


class OptimumCompressionQuantizer(HfExtOptimumQuantizer):
    """An ``optimum.quantization_base.OptimumQuantizer`` taking a ``CompressionConfig``
    (see :class:`~hf_ext.common.optimum.HfExtOptimumQuantizer`)."""

    config_class = CompressionConfig
