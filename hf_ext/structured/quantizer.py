"""``from_pretrained`` integration: prune after loading, rebuild the smaller skeleton when reloading.

* ``from_pretrained(dense, quantization_config=StructuredPruningConfig(...))``: the dense weights load, then
  :meth:`StructuredPruningQuantizer.quantize` scores, prunes and (optionally) recovers, and stores the kept head and
  channel counts of every block in ``config.quantization_config.layer_shapes``.
* ``from_pretrained(saved_pruned_dir)``: the saved config carries ``layer_shapes``; before the weights load,
  :meth:`build_skeleton` re-creates every projection of the meta model with those shapes and fixes the per-module
  head counts, so the smaller tensors load without mismatch and the model runs and generates.
"""

from __future__ import annotations

from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging

from ..common.quantizer import HfExtQuantizer, apply_to_model, register_method
from .config import StructuredPruningConfig
from .importance import BlockScores
from .pruner import prune_in_place
from .recovery import lora_recover
from .surgery import resize_skeleton

logger = logging.get_logger(__name__)


class StructuredPruningQuantizer(HfExtQuantizer):
    """Structured pruning as a transformers quantization method (``quant_method="hf_ext_structured"``)."""

    quantization_config: StructuredPruningConfig

    def quantize(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None,
                 scores: list[BlockScores] | None = None) -> None:
        cfg = self.quantization_config
        if cfg.is_pruned:
            raise ValueError("This StructuredPruningConfig already holds layer_shapes from an earlier run; "
                             "pass a fresh config (without layer_shapes) to prune again.")
        self.report = prune_in_place(model, tokenizer, cfg, scores=scores)
        if cfg.recovery_steps:
            self.report.extra["recovery"] = lora_recover(model, tokenizer, cfg)

    @property
    def needs_tokenizer(self) -> bool:  # magnitude scoring without recovery needs no text
        cfg = self.quantization_config
        return cfg.criterion != "magnitude" or cfg.recovery_steps > 0

    def build_skeleton(self, model: PreTrainedModel) -> None:
        cfg = self.quantization_config
        if not cfg.is_pruned:
            raise ValueError("The checkpoint's hf_ext_structured config has no layer_shapes; it was not pruned "
                             "by hf-ext, so its smaller shapes cannot be rebuilt.")
        n = resize_skeleton(model, cfg.layer_shapes)
        logger.info("Rebuilt %d pruned projections from layer_shapes before loading weights.", n)

    @property
    def is_trainable(self) -> bool:  # plain nn.Linear modules: fine-tuning a pruned model is ordinary training
        return True


def prune_structured(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None,
                     config: StructuredPruningConfig | None = None, scores: list[BlockScores] | None = None,
                     **kwargs) -> PreTrainedModel:
    """Prune ``model`` in memory; afterwards ``save_pretrained`` / ``from_pretrained`` round-trip it.

    Args:
        config: The pruning configuration (or give its fields as keyword arguments).
        scores: Scores from :func:`~hf_ext.structured.pruner.compute_scores` for this model and criterion, to
            prune one scoring at several ratios without calibrating again.

    Returns:
        The same model object, now physically smaller. ``model.hf_quantizer.report`` holds the
        :class:`~hf_ext.structured.pruner.PruneReport`.
    """
    if config is None:
        config = StructuredPruningConfig(**kwargs)
    elif kwargs:
        config = config.copy(**kwargs)
    return apply_to_model(model, tokenizer, config, scores=scores)


register_method(StructuredPruningConfig, StructuredPruningQuantizer)
