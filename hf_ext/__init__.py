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

# Each capability adds its (config, quantizer) pair here. Only the light config modules are imported at
# `import hf_ext`; a quantizer is a "module:Class" stand-in until transformers first instantiates it.
_QUANTIZATION_METHODS: tuple[tuple[str, str], ...] = (
    ("hf_ext.compression.config:CompressionConfig", "hf_ext.compression.quantizer:CompressionQuantizer"),
    ("hf_ext.structured.config:StructuredPruningConfig", "hf_ext.structured.quantizer:StructuredPruningQuantizer"),
    ("hf_ext.any_precision.config:AnyPrecisionConfig", "hf_ext.any_precision.quantizer:AnyPrecisionQuantizer"),
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
    "compression.optimum": ["OptimumCompressionQuantizer"],
    "structured.optimum": ["OptimumStructuredPruner"],
    "any_precision.optimum": ["OptimumAnyPrecisionQuantizer"],
    "serving": ["BestEffortServer", "ServingSimulator", "Router"],
    "alignment": ["ISARAConfig", "ISARATrainer"],
    "tool_cl": ["ToolCLBenchmark", "ContinualTrainer", "ReplayConfig"],
    "tiered_cache": ["TieredCacheConfig", "TieredCacheCallback", "TieredCachePlugin"],
}
_SUBPACKAGES = ("common", "compression", "structured", "any_precision", "speculative", "privacy", "metrics",
                "serving", "alignment", "tool_cl", "tiered_cache")

__all__ = sorted(n for names in _import_structure.values() for n in names) + list(_SUBPACKAGES)
__getattr__ = lazy_getattr(__name__, globals(), _import_structure, _SUBPACKAGES)


def _register() -> None:
    from .common.quantizer import register_method

    for config_path, quantizer_path in _QUANTIZATION_METHODS:
        module, _, name = config_path.partition(":")
        register_method(getattr(importlib.import_module(module), name), quantizer_path)
    # AutoConfig / AutoModel.from_pretrained(eagle_draft_dir): a light config and a stand-in model class
    importlib.import_module(f"{__name__}.speculative.eagle_config").register_auto_classes()
    importlib.import_module(f"{__name__}.metrics").install()  # evaluate.load("samia") by name, offline; never raises


_register()

if TYPE_CHECKING:
    from .alignment import ISARAConfig, ISARATrainer
    from .any_precision import AnyPrecisionConfig, AnyPrecisionLinear
    from .any_precision.optimum import OptimumAnyPrecisionQuantizer
    from .common.data import calibration_batches, load_text
    from .common.models import default_model_path, load_default_model, load_model, tiny_model
    from .common.perplexity import PerplexityResult, perplexity
    from .compression import CompressionConfig, compress, compress_checkpoint
    from .compression.optimum import OptimumCompressionQuantizer
    from .serving import BestEffortServer, Router, ServingSimulator
    from .speculative import SpeculativeConfig, SpeculativeGenerationMixin
    from .structured import StructuredPruningConfig, prune_structured
    from .structured.optimum import OptimumStructuredPruner
    from .tiered_cache import TieredCacheCallback, TieredCacheConfig, TieredCachePlugin
    from .tool_cl import ContinualTrainer, ReplayConfig, ToolCLBenchmark
