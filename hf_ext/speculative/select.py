"""Choosing a draft (and its lookahead) with the analytical model and measured latencies (Yan et al.).

:func:`select_draft` runs every candidate briefly on the user's prompts at a probe lookahead to measure its
per-step latency and acceptance, predicts the throughput of every lookahead with the target's measured forward
latencies, then measures each candidate at its predicted best lookahead. Candidates are ranked by predicted
throughput; measured throughput and the prediction error are reported beside it.

Everything is decode-only (the model's own terms): the target's prompt prefill and the draft's catch-up over the
prompt are outside both the draft step time and the measured throughput; the per-iteration overhead (sampling,
bookkeeping) is measured in the probe. Deterministic drafts (prompt lookup) get the acceptance model by position
(:class:`~.analytical.PositionalAcceptance`), model drafts the i.i.d. one, unless ``acceptance_model`` says otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging

from .analytical import LatencyProfile, PositionalAcceptance, best_lookahead, estimate_acceptance
from .drafts import DecodeState, PromptLookupDrafter
from .mixin import SpeculativeStats, as_drafter, generate
from .profiling import target_forward, time_target_forwards

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
    acceptance_model: str = "iid"
    predicted_tar: float = 0.0

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
    target_forward(model, state, input_ids[:, :-1], 0, cache, 1)
    cache.activate_past_recording()
    return time_target_forwards(model, state, cache, sizes)


def _run(target, inputs, draft, gamma, max_new_tokens) -> tuple[SpeculativeStats, float]:
    """One greedy run; returns its stats and its decode-only throughput."""
    stats = SpeculativeStats()
    target.generate(**inputs, custom_generate=generate, draft_model=draft, num_draft_tokens=gamma,
                    speculative_stats=stats, max_new_tokens=max_new_tokens, do_sample=False)
    return stats, stats.decode_tokens_per_second


def plain_decode_tps(target, inputs, max_new_tokens: int) -> float:
    """Decode-only tokens/s of plain greedy ``generate``: ``(N - 1) / (t(N) - t(1))`` (prefill cancels out)."""
    t0 = time.perf_counter()
    target.generate(**inputs, max_new_tokens=1, min_new_tokens=1, do_sample=False)
    t1 = time.perf_counter()
    target.generate(**inputs, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, do_sample=False)
    t2 = time.perf_counter()
    return (max_new_tokens - 1) / max((t2 - t1) - (t1 - t0), 1e-9)


def fit_acceptance(probes: Sequence[SpeculativeStats], positional: bool):
    """The acceptance model fitted on probe runs: an i.i.d. rate, or a :class:`PositionalAcceptance`."""
    model = PositionalAcceptance()
    accepted, lookaheads = [], []
    for stats in probes:
        for row, g in zip(stats.row_accepted, [g for g in stats.gammas if g > 0]):
            model.observe(row, g)
            accepted += row
            lookaheads += [g] * len(row)
    return model if positional else estimate_acceptance(accepted, lookaheads)


def select_draft(
    target: PreTrainedModel,
    candidates: Mapping[str, object] | Sequence[object],
    prompts: Sequence[str] | torch.Tensor,
    tokenizer: PreTrainedTokenizerBase | None = None,
    max_new_tokens: int = 32,
    probe_gamma: int = 4,
    max_gamma: int = 16,
    acceptance_model: str = "auto",
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
        acceptance_model: ``"iid"``, ``"position"``, or ``"auto"`` (by position for deterministic drafts).

    Returns:
        Rankings, best predicted throughput first.
    """
    if acceptance_model not in ("auto", "iid", "position"):
        raise ValueError(f"acceptance_model must be 'auto', 'iid' or 'position', got {acceptance_model!r}.")
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
    baseline = sum(plain_decode_tps(target, e, max_new_tokens) for e in encoded) / len(encoded)
    rankings = []
    for name, draft in candidates.items():
        probes = [_run(target, e, draft, probe_gamma, max_new_tokens) for e in encoded]
        stats_list = [p[0] for p in probes]
        positional = acceptance_model == "position" or (
            acceptance_model == "auto" and isinstance(draft, PromptLookupDrafter))
        alpha = fit_acceptance(stats_list, positional)
        steps = [t for st in stats_list for t in st.draft_step_seconds]
        t_draft = sum(steps) / len(steps) if steps else sum(st.draft_seconds for st in stats_list) / max(
            sum(sum(st.gammas) for st in stats_list), 1)
        overhead = sum(st.overhead for st in stats_list) / len(stats_list)
        prof = LatencyProfile(target=dict(profile.target), draft=t_draft, overhead=overhead)
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
        rate = alpha.rate(0) if positional else alpha
        rankings.append(DraftRanking(name, rate, 1e3 * prof.draft, plan.gamma, plan.tokens_per_second,
                                     sum(measured) / len(measured), baseline, sum(tar) / len(tar),
                                     "position" if positional else "iid", plan.expected_tokens))
    return sorted(rankings, key=lambda r: r.predicted_tps, reverse=True)
