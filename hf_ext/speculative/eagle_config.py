"""The EAGLE draft's config, light enough to register at ``import hf_ext`` (no torch modeling code).

``import hf_ext`` calls :func:`register_auto_classes`: ``AutoConfig`` then knows ``EagleDraftConfig`` and ``AutoModel``
a stand-in class that imports :mod:`.eagle` (the modeling code) only when a draft is built or loaded, so
``AutoModel.from_pretrained(draft_dir)`` works without importing ``hf_ext.speculative`` first. Importing
:mod:`.eagle` registers the real :class:`~.eagle.EagleDraftModel` in the stand-in's place.
"""

from __future__ import annotations

import importlib
import sys

from huggingface_hub.dataclasses import strict
from transformers import LlamaConfig

_MODEL_TARGET = "hf_ext.speculative.eagle:EagleDraftModel"


@strict
class EagleDraftConfig(LlamaConfig):
    """Config of :class:`~.eagle.EagleDraftModel`: a Llama decoder-layer config plus the draft's own fields.

    Args:
        draft_vocab_size: Tokens the draft head scores (the most frequent ones of the training text).
        target_vocab_size: The target's vocabulary (verification runs over it).
        target_model: Name or path of the target the draft was trained for (written into the model card).
        training_data: What it was trained on (written into the model card).
        feature_loss_weight: Weight of the Smooth-L1 loss between the draft output and the next target feature.
        token_loss_weight: Weight of the cross-entropy against the target's own next-token choice.
        train_unroll: Training passes per batch (1: EAGLE-1). With ``k > 1``, pass ``i`` reads the previous pass's
            outputs in place of the target features (a cheap form of EAGLE-3's "training-time test", so later draft
            steps see their own estimates as at inference); its loss is weighted ``0.8 ** i``.
    """

    model_type = "hf_ext_eagle_draft"
    draft_vocab_size: int = 8192
    target_vocab_size: int = 32000
    target_model: str | None = None
    training_data: str | None = None
    feature_loss_weight: float = 1.0
    token_loss_weight: float = 1.0
    train_unroll: int = 1

    def __post_init__(self, **kwargs):
        # plain ValueErrors here (strict dataclass validators wrap theirs in another exception type)
        if not 1 <= self.draft_vocab_size <= self.target_vocab_size:
            raise ValueError(f"draft_vocab_size must be in [1, target_vocab_size={self.target_vocab_size}], got "
                             f"{self.draft_vocab_size}.")
        if self.train_unroll < 1:
            raise ValueError(f"train_unroll must be >= 1, got {self.train_unroll}.")
        if self.feature_loss_weight < 0 or self.token_loss_weight < 0:
            raise ValueError(f"Loss weights must be >= 0, got {self.feature_loss_weight}, {self.token_loss_weight}.")
        super().__post_init__(**kwargs)


def _real_model():
    module, _, name = _MODEL_TARGET.partition(":")
    return getattr(importlib.import_module(module), name)


class LazyEagleDraftModel:
    """Stand-in for :class:`~.eagle.EagleDraftModel` in ``AutoModel``'s registry: each entry point transformers'
    auto classes call imports the real class and hands over to it."""

    config_class = EagleDraftConfig
    lazy_target = _MODEL_TARGET

    def __init__(self, *args, **kwargs):
        raise TypeError(f"{type(self).__name__} is a registry stand-in; use hf_ext.speculative.EagleDraftModel.")

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        return _real_model().from_pretrained(*args, **kwargs)

    @classmethod
    def from_config(cls, *args, **kwargs):
        return _real_model()._from_config(*args, **kwargs)

    @classmethod
    def _from_config(cls, *args, **kwargs):
        return _real_model()._from_config(*args, **kwargs)

    @classmethod
    def register_for_auto_class(cls, *args, **kwargs):
        return _real_model().register_for_auto_class(*args, **kwargs)


def register_auto_classes() -> None:
    """Make ``AutoConfig`` / ``AutoModel`` know the draft; the stand-in never replaces an already registered real
    class (``hf_ext.speculative.eagle`` imported first)."""
    from transformers import AutoConfig, AutoModel

    AutoConfig.register(EagleDraftConfig.model_type, EagleDraftConfig, exist_ok=True)
    if _MODEL_TARGET.partition(":")[0] not in sys.modules:
        AutoModel.register(EagleDraftConfig, LazyEagleDraftModel, exist_ok=True)
