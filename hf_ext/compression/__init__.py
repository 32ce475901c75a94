"""Compression: layerwise sparsity allocation (uniform, OWL, MRP, Hessian), Wanda / SparseGPT pruning and joint
low-bit quantization, through transformers' quantization mechanism.

    cfg = hf_ext.CompressionConfig(sparsity=0.7, allocation="mrp", metric="sparsegpt", bits=4)
    model = AutoModelForCausalLM.from_pretrained(path, quantization_config=cfg)
    model.save_pretrained(out)       # reloads with from_pretrained after `import hf_ext`
    hf_ext.compress_checkpoint(path, out, cfg)   # the same from disk, one block in memory (larger-than-RAM models)
"""

from .config import CompressionConfig
from .from_disk import compress_checkpoint
from .layer import CompressedLinear
from .quantizer import CompressionQuantizer, compress, record_eval, set_resident
from .report import CompressionReport

__all__ = ["CompressionConfig", "CompressedLinear", "CompressionQuantizer", "CompressionReport", "compress",
           "compress_checkpoint", "record_eval", "set_resident"]
