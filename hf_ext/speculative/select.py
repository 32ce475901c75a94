"""Choosing a draft (and its lookahead) with the analytical model and measured latencies (Yan et al.).

:func:`select_draft` runs every candidate briefly on the user's prompts at a probe lookahead to measure its
per-step latency and acceptance, predicts the throughput of every lookahead with the target's measured forward
latencies, then measures each candidate at its predicted best lookahead. Candidates are ranked by predicted
throughput; measured throughput and the prediction error are reported beside it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging

from .analytical import LatencyProfile, best_lookahead, estimate_acceptance
from .drafts import DecodeState
from .mixin import SpeculativeStats, _forward, _profile_target, as_drafter, generate

logger = logging.get_logger(__name__)


@dataclass
class DraftRanking:
    """One candidate draft as :func:`select_draft` saw it (throughputs in new tokens/s per sequence)."""

    name: str
    acceptance: float
    draft_step_ms: float
    best_gamma: int
    predicted_tps: float
    measured_tps: float
    baseline_tps: float
    mean_accepted_length: float

    @property
    def error_pct(self) -> float:
        """Prediction error relative to the measurement, in %."""
        return 100.0 * (self.predicted_tps - self.measured_tps) / self.measured_tps if self.measured_tps else 0.0

    @property
    def speedup(self) -> float:
        return self.measured_tps / self.baseline_tps if self.baseline_tps else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "error_pct": self.error_pct, "speedup": self.speedup}


@torch.no_grad()
def profile_target(model: PreTrainedModel, input_ids: torch.Tensor, sizes: Sequence[int] = (1, 2, 4, 8, 12, 17),
                   attention_mask: torch.Tensor | None = None) -> LatencyProfile:
    """Time one target forward over each number of new tokens after prefilling ``input_ids``."""
    pos = (attention_mask.long().cumsum(-1) - 1).clamp_min(0) if attention_mask is not None else torch.arange(
        input_ids.shape[1], device=input_ids.device)[None].expand(input_ids.shape[0], -1)
    state = DecodeState(input_ids, attention_mask, pos)
    cache = DynamicCache(config=model.config)
    _forward(model, state, input_ids[:, :-1], 0, cache, 1)
    cache.activate_past_recording()
    return _profile_target(model, state, cache, sizes)


def _run(target, inputs, draft, gamma, max_new_tokens) -> tuple[SpeculativeStats, float]:
    stats = SpeculativeStats()
    t0 = time.perf_counter()
    out = target.generate(**inputs, custom_generate=generate, draft_model=draft, num_draft_tokens=gamma,
                          speculative_stats=stats, max_new_tokens=max_new_tokens, do_sample=False)
    seconds = time.perf_counter() - t0
    return stats, (out.shape[1] - inputs["input_ids"].shape[1]) / seconds


def select_draft(
    target: PreTrainedModel,
    candidates: Mapping[str, object] | Sequence[object],
    prompts: Sequence[str] | torch.Tensor,
    tokenizer: PreTrainedTokenizerBase | None = None,
    max_new_tokens: int = 32,
    probe_gamma: int = 4,
    max_gamma: int = 16,
) -> list[DraftRanking]:
    """Rank candidate drafts by the analytical model's predicted throughput on ``target``, greedy decoding.

    Args:
        target: The target model.
        candidates: Drafts (``PreTrainedModel`` or :class:`~.drafts.Drafter`), by name or as a list.
        prompts: Prompt strings (needs ``tokenizer``) or a ``(N, L)`` tensor of ids; each is run at batch size 1.
        tokenizer: The target's tokenizer, for string prompts.
        max_new_tokens: Tokens generated per prompt and run.
        probe_gamma: Lookahead of the measuring run.
        max_gamma: Largest lookahead considered.

    Returns:
        Rankings, best predicted throughput first.
    """
    if not isinstance(candidates, Mapping):
        candidates = {getattr(c, "name", type(c).__name__) + f"#{i}": c for i, c in enumerate(candidates)}
    if not candidates:
        raise ValueError("select_draft needs at least one candidate draft.")
    for draft in candidates.values():
        as_drafter(draft, target)  # vocabulary check before any timing
    if isinstance(prompts, torch.Tensor):
        encoded = [{"input_ids": row[None]} for row in prompts]
    else:
        if tokenizer is None:
            raise ValueError("String prompts need tokenizer=.")
        encoded = [tokenizer(p, return_tensors="pt") for p in prompts]
    if not encoded:
        raise ValueError("select_draft needs at least one prompt.")
    encoded = [{k: v.to(target.device) for k, v in e.items()} for e in encoded]
    profile = profile_target(target, encoded[0]["input_ids"], sizes=sorted({1, 2, 4, 8, max_gamma + 1}))
    base_tps = []
    for e in encoded:
        t0 = time.perf_counter()
        out = target.generate(**e, max_new_tokens=max_new_tokens, do_sample=False)
        base_tps.append((out.shape[1] - e["input_ids"].shape[1]) / (time.perf_counter() - t0))
    baseline = sum(base_tps) / len(base_tps)
    rankings = []
    for name, draft in candidates.items():
        accepted: list[int] = []
        lookaheads: list[int] = []
        steps: list[float] = []
        probes = []
        for e in encoded:
            stats, tps = _run(target, e, draft, probe_gamma, max_new_tokens)
            probes.append((stats, tps))
            for row, g in zip(stats.row_accepted, [g for g in stats.gammas if g > 0]):
                accepted += row
                lookaheads += [g] * len(row)
            steps.append(stats.draft_seconds / max(sum(stats.gammas), 1))
        alpha = estimate_acceptance(accepted, lookaheads)
        prof = LatencyProfile(target=dict(profile.target), draft=sum(steps) / len(steps))
        plan = best_lookahead(alpha, prof, max_gamma)
        measured, tar = [], []
        for e, probe in zip(encoded, probes):
            if plan.gamma == 0:
                stats, tps = None, baseline
            elif plan.gamma == probe_gamma:  # the probe already ran at this lookahead
                stats, tps = probe
            else:
                stats, tps = _run(target, e, draft, plan.gamma, max_new_tokens)
            measured.append(tps)
            tar.append(stats.mean_accepted_length if stats else 1.0)
        rankings.append(DraftRanking(name, alpha, 1e3 * prof.draft, plan.gamma, plan.tokens_per_second,
                                     sum(measured) / len(measured), baseline, sum(tar) / len(tar)))
    return sorted(rankings, key=lambda r: r.predicted_tps, reverse=True)
