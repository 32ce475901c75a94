"""Compression: layerwise sparsity allocation (uniform, OWL, MRP, Hessian), magnitude / Wanda / SparseGPT / ALPS
pruning, a fixed-mask refit of the kept weights, joint low-bit quantization, through transformers' quantization
mechanism. Checkpoints carry per-buffer digests (a damaged one is refused at load time); ``resident="packed"``
keeps only the packed form in memory.

    cfg = hf_ext.CompressionConfig(sparsity=0.7, allocation="mrp", metric="sparsegpt", bits=4)
    model = AutoModelForCausalLM.from_pretrained(path, quantization_config=cfg)
    model.save_pretrained(out)       # reloads with from_pretrained after `import hf_ext`
    hf_ext.compress_checkpoint(path, out, cfg)   # the same from disk, one block in memory (larger-than-RAM models)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..common.import_utils import lazy_getattr

_import_structure: dict[str, list[str]] = {
    "config": ["CompressionConfig"],
    "from_disk": ["compress_checkpoint"],
    "layer": ["CompressedLinear"],
    "quantizer": ["CompressionQuantizer", "compress", "record_eval", "set_resident"],
    "report": ["CompressionReport"],
    "optimum": ["OptimumCompressionQuantizer"],
}
__all__ = sorted(n for names in _import_structure.values() for n in names)
__getattr__ = lazy_getattr(__name__, globals(), _import_structure)

if TYPE_CHECKING:
    from .config import CompressionConfig
    from .from_disk import compress_checkpoint
    from .layer import CompressedLinear
    from .optimum import OptimumCompressionQuantizer
    from .quantizer import CompressionQuantizer, compress, record_eval, set_resident
    from .report import CompressionReport
