"""Entry points for code that already holds a model, or wants ``precisions=`` as a plain keyword."""

from __future__ import annotations

import os

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from ..common.quantizer import apply_to_model
from .config import AnyPrecisionConfig


def quantize(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, config: AnyPrecisionConfig | None = None,
             fisher: dict[str, torch.Tensor] | None = None, **fields) -> PreTrainedModel:
    """Quantize a float model in memory; afterwards it behaves exactly as if loaded with ``quantization_config``.

    ``fisher`` (from :func:`compute_fisher`) skips the calibration pass, e.g. to quantize copies of one model.
    """
    config = config.copy(**fields) if config is not None else AnyPrecisionConfig(**fields)
    return apply_to_model(model, tokenizer, config, fisher=fisher)


def from_pretrained(name_or_path: str | os.PathLike, precisions: list[int] | None = None, **kwargs) -> PreTrainedModel:
    """Load a saved any-precision checkpoint (folder or Hub id) with only ``precisions`` (default: all stored).

    Equivalent to ``AutoModelForCausalLM.from_pretrained(name_or_path,
    quantization_config=AnyPrecisionConfig(precisions=precisions))``.
    """
    if precisions is not None:
        kwargs["quantization_config"] = AnyPrecisionConfig(precisions=list(precisions))
    return AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)
