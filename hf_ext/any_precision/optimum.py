"""Optimum-style entry point for any-precision quantization.

    quantizer = OptimumAnyPrecisionQuantizer.from_pretrained("facebook/opt-125m")
    quantizer.quantize(save_dir="out", quantization_config=AnyPrecisionConfig(...))
"""

from __future__ import annotations

from ..common.optimum import HfExtOptimumQuantizer
from .config import AnyPrecisionConfig


class OptimumAnyPrecisionQuantizer(HfExtOptimumQuantizer):
    """An ``optimum.quantization_base.OptimumQuantizer`` taking a ``AnyPrecisionConfig``
    (see :class:`~hf_ext.common.optimum.HfExtOptimumQuantizer`)."""

    config_class = AnyPrecisionConfig
