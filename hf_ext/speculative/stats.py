"""What one speculative ``generate`` call did (filled when passed as ``speculative_stats=``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .analytical import LatencyProfile, estimate_acceptance


@dataclass
class SpeculativeStats:
    """What one speculative ``generate`` call did; pass an instance as ``speculative_stats=`` to get it filled."""

    gammas: list[int] = field(default_factory=list)
    committed: list[int] = field(default_factory=list)  # tokens each row advanced per iteration (lockstep)
    row_accepted: list[list[int]] = field(default_factory=list)  # accepted drafts of each active row, per iteration
    draft_seconds: float = 0.0
    target_seconds: float = 0.0
    prefill_seconds: float = 0.0  # the target's prompt prefill
    draft_prefill_seconds: float = 0.0  # the draft's catch-up over the prompt (its first proposal, less its steps)
    draft_step_seconds: list[float] = field(default_factory=list)  # one per proposed token after that
    seconds: float = 0.0
    new_tokens: int = 0
    profile: LatencyProfile | None = None

    @property
    def acceptance(self) -> float:
        """Per-token draft acceptance of this call alone (passed / tested draft tokens; 0 without drafts)."""
        drafted = [g for g in self.gammas if g > 0]  # row_accepted has one entry per drafting iteration
        return estimate_acceptance([n for row in self.row_accepted for n in row],
                                   [g for row, g in zip(self.row_accepted, drafted) for _ in row])

    @property
    def draft_step(self) -> float:
        """Mean seconds of one draft step (prompt catch-up excluded); 0 without draft steps."""
        steps = self.draft_step_seconds
        return sum(steps) / len(steps) if steps else 0.0

    @property
    def overhead(self) -> float:
        """Mean seconds per iteration outside the target forward and the draft steps (sampling, bookkeeping)."""
        if not self.gammas:
            return 0.0
        decode = self.seconds - self.prefill_seconds - self.draft_prefill_seconds
        rest = decode - (self.target_seconds - self.prefill_seconds) - sum(self.draft_step_seconds)
        return max(rest, 0.0) / len(self.gammas)

    @property
    def iterations(self) -> int:
        return len(self.gammas)

    @property
    def mean_accepted_length(self) -> float:
        """Tokens per row per iteration, bonus token included (TAR at this batch size)."""
        return sum(self.committed) / len(self.committed) if self.committed else 0.0

    @property
    def row_mean_accepted_length(self) -> float:
        """Tokens a row would emit per iteration on its own (its accepted drafts + 1), averaged over rows."""
        flat = [n + 1 for row in self.row_accepted for n in row]
        return sum(flat) / len(flat) if flat else 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds else 0.0

    @property
    def decode_tokens_per_second(self) -> float:
        """Tokens after the first per second, both prompt prefills (target and draft) left out: what the
        analytical model predicts."""
        secs = self.seconds - self.prefill_seconds - self.draft_prefill_seconds
        return (self.new_tokens - 1) / secs if secs > 0 else 0.0
