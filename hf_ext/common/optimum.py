"""The Optimum door: ``XQuantizer.from_pretrained(model_or_path).quantize(save_dir=..., quantization_config=...)``.

optimum's quantizers (``optimum.quantization_base.OptimumQuantizer``: ONNX Runtime, OpenVINO, ...) are used as
"load, then quantize into a folder". :class:`HfExtOptimumQuantizer` gives every hf-ext method that shape on top of the
same path as ``from_pretrained(..., quantization_config=cfg)``; each capability subclasses it with its config class.
The folder it writes reloads with plain ``AutoModelForCausalLM.from_pretrained`` after ``import hf_ext``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

from optimum.quantization_base import OptimumQuantizer
from transformers.utils import logging

from .quantizer import HfExtQuantizationConfig

logger = logging.get_logger(__name__)


class HfExtOptimumQuantizer(OptimumQuantizer):
    """Load a float causal LM, then write a compressed / pruned / quantized copy with :meth:`quantize`.

    Subclasses set :attr:`config_class`; :meth:`quantize` accepts only that config type.
    """

    config_class: ClassVar[type[HfExtQuantizationConfig]] = HfExtQuantizationConfig

    def __init__(self, model, tokenizer=None):
        self.model = model
        self.tokenizer = tokenizer

    @classmethod
    def from_pretrained(cls, model_or_path, file_name: str | None = None, tokenizer=None):
        """A model object (with ``tokenizer=``) or a folder / Hub id / ``"default"`` to load in float32.

        ``file_name`` is optimum's argument for single-file formats; hf-ext reads transformers folders and rejects it.
        """
        if file_name is not None:
            raise ValueError(f"{cls.__name__} loads transformers folders; file_name={file_name!r} is not supported.")
        if isinstance(model_or_path, (str, os.PathLike)):
            from .models import load_model

            model, loaded_tokenizer = load_model(model_or_path)
            return cls(model, tokenizer if tokenizer is not None else loaded_tokenizer)
        return cls(model_or_path, tokenizer)

    def quantize(self, save_dir: str | os.PathLike, file_prefix: str | None = None,
                 quantization_config: HfExtQuantizationConfig | None = None, overwrite: bool = False) -> Path:
        """Apply ``quantization_config`` to the loaded model and save it (with its tokenizer and card) to ``save_dir``.

        Returns:
            ``save_dir``, written atomically (refused when non-empty unless ``overwrite``).
        """
        from .quantizer import apply_to_model
        from .utils import atomic_dir, check_output_dir

        if file_prefix is not None:
            raise ValueError(f"{type(self).__name__} writes a transformers folder; file_prefix is not supported.")
        config = quantization_config if quantization_config is not None else self.config_class()
        if not isinstance(config, self.config_class):
            raise ValueError(f"{type(self).__name__} takes a {self.config_class.__name__}, got "
                             f"{type(config).__name__}.")
        check_output_dir(save_dir, overwrite)  # before the calibration pass
        apply_to_model(self.model, self.tokenizer, config.copy())
        with atomic_dir(save_dir, overwrite=overwrite) as tmp:
            self.model.save_pretrained(tmp)
            if self.tokenizer is not None:
                self.tokenizer.save_pretrained(tmp)
        logger.info("Saved %s output to %s", self.config_class.__name__, save_dir)
        return Path(save_dir)
