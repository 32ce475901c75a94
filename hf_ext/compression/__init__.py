"""Compression: layerwise sparsity allocation (uniform, OWL, MRP, Hessian), magnitude / Wanda / SparseGPT / ALPS
pruning, a fixed-mask refit of the kept weights, joint low-bit quantization, through transformers' quantization
mechanism. Checkpoints carry per-buffer digests (a damaged one is refused at load time); ``resident="packed"``
keeps only the packed form in memory.

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
