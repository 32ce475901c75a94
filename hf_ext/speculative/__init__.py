"""Speculative decoding for ``generate()`` with the analytical model of "Decoding Speculative Decoding".

``model.generate(**inputs, custom_generate=hf_ext.speculative.generate, draft_model=draft, num_draft_tokens="auto")``
"""

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
from .eagle import EagleDraftConfig, EagleDraftModel
from .eagle_drafter import EagleDrafter
from .eagle_train import EagleTrainingConfig, train_eagle_draft
from .entry import CUSTOM_GENERATE_DIR, SpeculativeGenerationMixin, generate_with_draft
from .mixin import generate
from .select import DraftRanking, profile_target, select_draft
from .stats import SpeculativeStats
from .verify import greedy_verify, lockstep_tokens, rejection_verify

__all__ = [
    "AcceptanceTracker", "CUSTOM_GENERATE_DIR", "DraftRanking", "Drafter", "EagleDraftConfig", "EagleDraftModel",
    "EagleDrafter", "EagleTrainingConfig", "LatencyProfile", "ModelDrafter",
    "PromptLookupDrafter", "SpeculativeConfig", "SpeculativeGenerationMixin", "SpeculativeStats", "best_lookahead",
    "estimate_acceptance", "expected_tokens", "frequency_vocab", "generate", "generate_with_draft", "greedy_verify",
    "leviathan_speedup", "lockstep_tokens", "plan_lookaheads", "predicted_throughput", "predicted_throughput_mix",
    "profile_target",
    "rejection_verify", "select_draft", "shallow_self_draft", "train_eagle_draft",
]
