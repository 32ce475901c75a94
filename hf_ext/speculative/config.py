"""Settings of speculative decoding that the paper leaves open (every default here is our choice)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..common.config import ConfigMixin


@dataclass
class SpeculativeConfig(ConfigMixin):
    """Knobs of :func:`hf_ext.speculative.generate`.

    Args:
        max_draft_tokens: Largest lookahead ``"auto"`` may pick.
        initial_draft_tokens: Lookahead of the first iteration under ``"auto"`` before the draft has been timed.
        profile_sizes: Numbers of tokens per target forward timed once per (target, batch size) for ``"auto"``.
        prior_acceptance: Acceptance rate assumed before any verification (blended with observations).
        prior_weight: Weight of that prior, in tested positions.
        probe_every: Under ``"auto"``, after this many iterations at lookahead 0 (no predicted gain), try lookahead
            1 once so the acceptance estimate can recover.
        probe_until: Probe only while fewer draft positions than this have been tested (the estimate is unsure).
        carry_acceptance: Under ``"auto"``, the acceptance counts of earlier calls with the same draft and target
            seed the estimate, scaled down to at most this many tested positions.
        adapt: Re-plan the lookahead after every iteration (``False``: plan once after the first iteration).
    """

    max_draft_tokens: int = field(default=16, metadata={"help": "largest lookahead 'auto' may pick"})
    initial_draft_tokens: int = field(default=4, metadata={"help": "first lookahead under 'auto', before timing"})
    profile_sizes: tuple[int, ...] = field(default=(1, 2, 4, 8, 12, 17),
                                           metadata={"help": "target forward sizes timed for 'auto'"})
    prior_acceptance: float = field(default=0.5, metadata={"help": "acceptance rate assumed before observations"})
    prior_weight: float = field(default=4.0, metadata={"help": "weight of the prior, in tested positions"})
    probe_every: int = field(default=16, metadata={"help": "iterations at lookahead 0 before probing lookahead 1"})
    probe_until: int = field(default=64, metadata={"help": "probe only while fewer positions were tested"})
    carry_acceptance: float = field(default=32.0, metadata={"help": "weight of earlier calls' acceptance counts"})
    adapt: bool = field(default=True, metadata={"help": "re-plan the lookahead after every iteration"})

    def __post_init__(self) -> None:
        self.check_types()
        if self.max_draft_tokens < 1:
            raise ValueError(f"max_draft_tokens must be >= 1, got {self.max_draft_tokens}.")
        if not 1 <= self.initial_draft_tokens <= self.max_draft_tokens:
            raise ValueError(f"initial_draft_tokens must be in [1, max_draft_tokens], got {self.initial_draft_tokens}.")
        if not self.profile_sizes or min(self.profile_sizes) < 1:
            raise ValueError(f"profile_sizes must be positive sizes, got {self.profile_sizes}.")
        if not 0.0 <= self.prior_acceptance <= 1.0:
            raise ValueError(f"prior_acceptance must be in [0, 1], got {self.prior_acceptance}.")
        if self.prior_weight < 0:
            raise ValueError(f"prior_weight must be >= 0, got {self.prior_weight}.")
        if self.probe_until < 0 or self.carry_acceptance < 0:
            raise ValueError(f"probe_until and carry_acceptance must be >= 0, got {self.probe_until}, "
                             f"{self.carry_acceptance}.")
        if self.probe_every < 1:
            raise ValueError(f"probe_every must be >= 1, got {self.probe_every}.")
