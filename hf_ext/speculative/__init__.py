"""Speculative decoding for ``generate()`` with the analytical model of "Decoding Speculative Decoding".

``model.generate(**inputs, custom_generate=hf_ext.speculative.generate, draft_model=draft, num_draft_tokens="auto")``
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..common.import_utils import lazy_getattr

_import_structure: dict[str, list[str]] = {
    "analytical": ["AcceptanceTracker", "LatencyProfile", "best_lookahead", "estimate_acceptance", "expected_tokens",
                   "leviathan_speedup", "plan_lookaheads", "predicted_throughput", "predicted_throughput_mix"],
    "config": ["SpeculativeConfig"],
    "drafts": ["Drafter", "ModelDrafter", "PromptLookupDrafter", "frequency_vocab", "shallow_self_draft"],
    "eagle": ["EagleDraftModel"],
    "eagle_config": ["EagleDraftConfig"],
    "eagle_drafter": ["EagleDrafter"],
    "eagle_train": ["EagleTrainingConfig", "train_eagle_draft"],
    "entry": ["CUSTOM_GENERATE_DIR", "SpeculativeGenerationMixin", "generate_with_draft"],
    "mixin": ["generate"],
    "select": ["DraftRanking", "profile_target", "select_draft"],
    "stats": ["SpeculativeStats"],
    "verify": ["greedy_verify", "lockstep_tokens", "rejection_verify"],
}
__all__ = sorted(n for names in _import_structure.values() for n in names)
__getattr__ = lazy_getattr(__name__, globals(), _import_structure)

if TYPE_CHECKING:
    from .analytical import (
        AcceptanceTracker,
        LatencyProfile,
        best_lookahead,
        estimate_acceptance,
        expected_tokens,
        leviathan_speedup,
        plan_lookaheads,
        predicted_throughput,
        predicted_throughput_mix,
    )
    from .config import SpeculativeConfig
    from .drafts import Drafter, ModelDrafter, PromptLookupDrafter, frequency_vocab, shallow_self_draft
    from .eagle import EagleDraftModel
    from .eagle_config import EagleDraftConfig
    from .eagle_drafter import EagleDrafter
    from .eagle_train import EagleTrainingConfig, train_eagle_draft
    from .entry import CUSTOM_GENERATE_DIR, SpeculativeGenerationMixin, generate_with_draft
    from .mixin import generate
    from .select import DraftRanking, profile_target, select_draft
    from .stats import SpeculativeStats
    from .verify import greedy_verify, lockstep_tokens, rejection_verify
