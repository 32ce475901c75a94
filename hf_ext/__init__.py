"""hf-ext: recent LLM research results as Hugging Face ecosystem extensions.

``import hf_ext`` registers hf-ext's quantization methods with transformers (so saved compressed, pruned and
any-precision checkpoints reload with plain ``from_pretrained``) and installs its ``evaluate`` modules where
``evaluate.load(name)`` finds them offline. Everything else is imported lazily on first attribute access.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .common.import_utils import lazy_getattr

__version__ = "0.1.0"

# Each capability adds its quantizer module here; importing it registers the method with transformers.
_REGISTRATION_MODULES: tuple[str, ...] = (
    "hf_ext.compression.quantizer",
    "hf_ext.structured.quantizer",
    "hf_ext.any_precision.quantizer",
)

# public name -> submodule that defines it (trl's lazy _import_structure pattern)
_import_structure: dict[str, list[str]] = {
    "common.models": ["load_default_model", "load_model", "tiny_model", "default_model_path"],
    "common.data": ["load_text", "calibration_batches"],
    "common.perplexity": ["perplexity", "PerplexityResult"],
    "compression": ["CompressionConfig", "compress", "compress_checkpoint"],
    "structured": ["StructuredPruningConfig", "prune_structured"],
    "any_precision": ["AnyPrecisionConfig", "AnyPrecisionLinear"],
    "speculative": ["SpeculativeGenerationMixin", "SpeculativeConfig"],
    "tiered_cache": ["TieredCacheConfig", "TieredCacheCallback", "TieredCachePlugin"],
}
_SUBPACKAGES = ("common", "compression", "structured", "any_precision", "speculative", "privacy", "metrics",
                "tiered_cache")

__all__ = sorted(n for names in _import_structure.values() for n in names) + list(_SUBPACKAGES)
__getattr__ = lazy_getattr(__name__, globals(), _import_structure, _SUBPACKAGES)


def _register() -> None:
    for module in _REGISTRATION_MODULES:
        importlib.import_module(module)
    importlib.import_module(f"{__name__}.metrics").install()  # evaluate.load("samia") by name, offline; never raises


_register()

if TYPE_CHECKING:
    from .any_precision import AnyPrecisionConfig, AnyPrecisionLinear
    from .common.data import calibration_batches, load_text
    from .common.models import default_model_path, load_default_model, load_model, tiny_model
    from .common.perplexity import PerplexityResult, perplexity
    from .compression import CompressionConfig, compress, compress_checkpoint
    from .speculative import SpeculativeConfig, SpeculativeGenerationMixin
    from .structured import StructuredPruningConfig, prune_structured
    from .tiered_cache import TieredCacheCallback, TieredCacheConfig, TieredCachePlugin
