"""Speculative decoding through ``generate()``: the ``custom_generate`` function and a model mixin.

``model.generate(**inputs, custom_generate=hf_ext.speculative.generate, draft_model=draft, num_draft_tokens="auto")``
runs draft-and-verify decoding with the logits processors and stopping criteria ``generate`` prepared (temperature,
top-k, top-p, repetition penalty, eos, ``max_new_tokens``, stop strings), left-padded batches, and KV caches for both
models (cropped after every verification). Greedy output equals the target's plain greedy ``generate`` token for
token; sampled output follows the target's distribution (rejection sampling, :mod:`.verify`).

``num_draft_tokens="auto"`` times the target's forward for a few sizes once per (target, batch size), times the
draft while it runs, estimates acceptance from the accepted lengths, and re-plans the lookahead every iteration with
the analytical model (:mod:`.analytical`).
"""

from __future__ import annotations

import contextlib
import time
import weakref

import torch
from transformers import DynamicCache, GenerationConfig, LogitsProcessorList, PreTrainedModel, StoppingCriteriaList
from transformers.generation.utils import GenerateDecoderOnlyOutput
from transformers.utils import logging

from .analytical import AcceptanceTracker, LatencyProfile, PositionalAcceptance, best_lookahead
from .config import SpeculativeConfig
from .drafts import DecodeState, Drafter, ModelDrafter, PromptLookupDrafter
from .inputs import ExtraInputs
from .profiling import target_forward, time_target_forwards
from .stats import SpeculativeStats
from .verify import greedy_verify, lockstep_tokens, rejection_verify

logger = logging.get_logger(__name__)

# measured target profiles per (target model, batch size) and draft latencies per draft, reused across calls
_TARGET_PROFILES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_DRAFT_LATENCY: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# observed (passed, tested) acceptance counts per (draft, target), carried into the next call's estimate
_ACCEPTANCE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def as_drafter(draft_model, target: PreTrainedModel) -> Drafter:
    """Wrap ``draft_model`` (a ``PreTrainedModel`` or a :class:`Drafter`), checking it shares the vocabulary."""
    if isinstance(draft_model, Drafter):
        drafter = draft_model
    elif isinstance(draft_model, PreTrainedModel) and hasattr(draft_model, "make_drafter"):
        drafter = draft_model.make_drafter(target)  # drafts that read the target (EagleDraftModel)
    elif isinstance(draft_model, PreTrainedModel):
        drafter = ModelDrafter(draft_model)
    else:
        raise TypeError(
            f"draft_model must be a PreTrainedModel or an hf_ext Drafter, got {type(draft_model).__name__}."
        )
    target_vocab = target.config.get_text_config().vocab_size
    if drafter.vocab_size is not None and drafter.vocab_size != target_vocab:
        raise ValueError(
            f"The draft's vocabulary ({drafter.vocab_size} tokens) differs from the target's ({target_vocab}); "
            "speculative decoding needs a draft with the target's tokenizer (universal assisted decoding across "
            "tokenizers is not supported by hf_ext.speculative: use transformers' assistant_model with "
            "tokenizer= and assistant_tokenizer= for that)."
        )
    return drafter


def _check_num_draft_tokens(num_draft_tokens) -> None:
    if num_draft_tokens == "auto":
        return
    if isinstance(num_draft_tokens, bool) or not isinstance(num_draft_tokens, int) or num_draft_tokens <= 0:
        raise ValueError(f"num_draft_tokens must be a positive int or 'auto', got {num_draft_tokens!r}.")


@contextlib.contextmanager
def _capture_last_hidden(model, wanted: bool):
    """Record the target's last hidden state (the input of its LM head) of every forward in ``box[0]``."""
    box: list = [None]
    if not wanted:
        yield box
        return

    def hook(module, args, output):
        box[0] = output[0] if isinstance(output, tuple) else output.last_hidden_state

    handle = model.get_decoder().register_forward_hook(hook)
    try:
        yield box
    finally:
        handle.remove()


class LookaheadController:
    """Fixed lookahead, or the analytical model's choice re-planned from measurements (``"auto"``)."""

    def __init__(self, num_draft_tokens, cfg: SpeculativeConfig, profile: LatencyProfile | None,
                 tracker: AcceptanceTracker):
        self.fixed = None if num_draft_tokens == "auto" else int(num_draft_tokens)
        self.cfg, self.profile, self.tracker = cfg, profile, tracker
        self.planned: int | None = None
        self.zero_run = 0
        self.positional: PositionalAcceptance | None = None  # set for deterministic drafts (prompt lookup)

    def choose(self, active_rows: int) -> int:
        if self.fixed is not None:
            return self.fixed
        if self.profile.draft is None:
            return self.cfg.initial_draft_tokens
        if self.planned is None or self.cfg.adapt:
            alpha = self.positional if self.positional is not None and self.positional.tested else self.tracker.rate
            self.planned = best_lookahead(alpha, self.profile, self.cfg.max_draft_tokens,
                                          batch_size=max(active_rows, 1)).gamma
        if self.planned == 0:
            self.zero_run += 1
            # probing costs a draft catch-up over every token since the last proposal: only while unsure
            if self.zero_run >= self.cfg.probe_every and self.tracker.tested < self.cfg.probe_until:
                self.zero_run = 0
                return 1
        return self.planned


@torch.no_grad()
def generate(
    model: PreTrainedModel,
    input_ids: torch.LongTensor,
    logits_processor: LogitsProcessorList,
    stopping_criteria: StoppingCriteriaList,
    generation_config: GenerationConfig,
    draft_model=None,
    num_draft_tokens: int | str = "auto",
    speculative_config: SpeculativeConfig | None = None,
    speculative_stats: SpeculativeStats | None = None,
    speculative_streamer=None,
    synced_gpus: bool = False,
    **model_kwargs,
):
    """Speculative decoding as a ``custom_generate`` for ``model.generate``.

    Args:
        model: The target model (passed by ``generate``).
        input_ids: ``(B, L)`` prompt ids, left-padded for B > 1.
        logits_processor: Processors prepared by ``generate`` (applied to target and draft scores).
        stopping_criteria: Criteria prepared by ``generate`` (max length, eos, stop strings, ...).
        generation_config: The resolved generation config (``do_sample`` chooses greedy or rejection sampling).
        draft_model: A ``PreTrainedModel`` sharing the target's vocabulary, or a :class:`~.drafts.Drafter`.
        num_draft_tokens: Lookahead: a positive int, or ``"auto"`` (analytical model, adapted during generation).
        speculative_config: Optional :class:`SpeculativeConfig`.
        speculative_stats: Optional :class:`SpeculativeStats` filled with what happened.
        speculative_streamer: A transformers streamer (``put`` / ``end``), fed like ``generate(streamer=)`` feeds one:
            the prompt, then every committed token. With a callable ``custom_generate`` transformers keeps
            ``streamer=`` to itself (it sends it the prompt only), so pass the streamer under this name, or use
            :class:`SpeculativeGenerationMixin` / :data:`CUSTOM_GENERATE_DIR`, which accept ``streamer=``.
        synced_gpus: Not supported (must be False).
        **model_kwargs: ``attention_mask``, ``position_ids``, ``cache``, ``use_cache`` from ``generate``, and any
            other model input (``token_type_ids``, a custom forward argument, ...), passed to every target forward
            as plain decoding passes it (:mod:`.inputs`; the draft does not see them).

    Returns:
        The sequences ``(B, L + new)``, or a ``GenerateDecoderOnlyOutput`` with ``return_dict_in_generate=True``.
    """
    t_start = time.perf_counter()
    if draft_model is None:
        raise ValueError("hf_ext.speculative.generate needs draft_model= (a model or an hf_ext Drafter).")
    _check_num_draft_tokens(num_draft_tokens)
    cfg = speculative_config or SpeculativeConfig()
    if synced_gpus:
        raise NotImplementedError("synced_gpus is not supported by hf_ext.speculative.generate.")
    if model.config.is_encoder_decoder:
        raise NotImplementedError("hf_ext.speculative.generate supports decoder-only models.")
    if generation_config.num_beams > 1:
        raise ValueError(f"Speculative decoding is greedy or sampling, got num_beams={generation_config.num_beams}.")
    drafter = as_drafter(draft_model, model)
    extra = ExtraInputs(model_kwargs)
    streamer = speculative_streamer
    if streamer is not None and input_ids.shape[0] > 1:
        raise ValueError("A streamer takes one sequence: speculative_streamer needs batch size 1, "
                         f"got {input_ids.shape[0]}.")
    stats = speculative_stats if speculative_stats is not None else SpeculativeStats()
    do_sample = bool(generation_config.do_sample)
    pad = generation_config._pad_token_tensor
    has_eos = any(hasattr(c, "eos_token_id") for c in stopping_criteria)
    max_length = generation_config.max_length
    batch = input_ids.shape[0]

    cache = model_kwargs.get("cache")
    if cache is None:
        cache = DynamicCache(config=model.config)
    elif cache.get_seq_length() > 0:
        raise ValueError("hf_ext.speculative.generate starts from an empty cache; got one holding tokens.")
    mask = model_kwargs.get("attention_mask")
    pos = model_kwargs.get("position_ids")
    if pos is None:
        pos = (mask.long().cumsum(-1) - 1).clamp_min(0) if mask is not None else torch.arange(
            input_ids.shape[1], device=input_ids.device)[None]
    state = DecodeState(input_ids, mask, pos.expand(batch, -1))
    unfinished = torch.ones(batch, dtype=torch.long, device=input_ids.device)

    def select(ctx: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not do_sample and len(logits_processor) == 0:
            return logits.argmax(-1), None
        scores = logits_processor(ctx, logits)
        if not do_sample:
            return scores.argmax(-1), None
        probs = torch.softmax(scores, dim=-1)
        return torch.multinomial(probs, 1).squeeze(1), probs

    def commit(tokens: torch.Tensor) -> bool:
        """Append tokens one at a time through the stopping criteria, as plain decoding does; True when done."""
        nonlocal unfinished
        for k in range(tokens.shape[1]):
            nxt = tokens[:, k]
            if has_eos:
                nxt = nxt * unfinished + pad * (1 - unfinished)
            state.ids = torch.cat([state.ids, nxt[:, None]], dim=1)
            if streamer is not None:
                streamer.put(nxt.cpu())
            state.pos = torch.cat([state.pos, state.pos[:, -1:] + 1], dim=1)
            if state.mask is not None:
                state.mask = torch.cat([state.mask, state.mask.new_ones(batch, 1)], dim=1)
            unfinished = unfinished & ~stopping_criteria(state.ids, None)
            if not unfinished.any():
                return True
        return False

    if streamer is not None:
        streamer.put(input_ids.cpu())
    with _capture_last_hidden(model, drafter.needs_target_hidden) as hidden:
        drafter.begin(state)
        # prefill exactly as plain decoding does, so the first token is the target's own
        t0 = time.perf_counter()
        out = target_forward(model, state, state.ids, 0, cache, 1, extra)
        first, _ = select(state.ids, out.logits[:, -1].to(copy=True, dtype=torch.float32))
        stats.prefill_seconds = time.perf_counter() - t0
        stats.target_seconds += stats.prefill_seconds
        del out
        if hidden[0] is not None:
            drafter.observe_target(hidden[0], 0)
        done = commit(first[:, None])
        extra.commit(state.ids.shape[1])
        cache.activate_past_recording()  # rejected states of sliding-window layers stay until `crop`

        tracker = AcceptanceTracker(prior_rate=cfg.prior_acceptance, prior_weight=cfg.prior_weight)
        profile = None
        if num_draft_tokens == "auto" and not done:
            per_batch = _TARGET_PROFILES.setdefault(model, {})
            if batch not in per_batch:
                per_batch[batch] = time_target_forwards(model, state, cache, cfg.profile_sizes, extra)
            profile = per_batch[batch]
            key = getattr(drafter, "model", drafter)
            profile.draft = _DRAFT_LATENCY.get(key)
            seen = _ACCEPTANCE.get(key, {}).get(model)
            if seen is not None:
                scale = min(1.0, cfg.carry_acceptance / max(seen[1], 1e-9))
                tracker.passed, tracker.tested = seen[0] * scale, seen[1] * scale
        controller = LookaheadController(num_draft_tokens, cfg, profile, tracker)
        if isinstance(drafter, PromptLookupDrafter):  # its acceptance comes in stretches: model it by position
            controller.positional = PositionalAcceptance(prior_rate=cfg.prior_acceptance)
        while not done:
            t_iter = time.perf_counter()
            length = state.ids.shape[1]
            gamma = max(0, min(controller.choose(int(unfinished.sum())), max_length - length - 1))
            n_steps = len(drafter.step_seconds)
            if gamma > 0:
                t0 = time.perf_counter()
                proposal = drafter.propose(state, gamma, select)
                t_propose = time.perf_counter() - t0
                stats.draft_seconds += t_propose
                if not any(stats.gammas):  # the first proposal: the draft's prompt catch-up is a prefill
                    stats.draft_prefill_seconds = max(t_propose - sum(drafter.step_seconds[n_steps:]), 0.0)
                draft, draft_probs = proposal.tokens[:, :gamma], proposal.probs
                gamma = draft.shape[1]
            else:
                draft, draft_probs = state.ids.new_zeros(batch, 0), None
            t0 = time.perf_counter()
            out = target_forward(model, state, torch.cat([state.ids[:, -1:], draft], dim=1), length - 1, cache,
                                 gamma + 1, extra)
            t_target = time.perf_counter() - t0
            stats.target_seconds += t_target
            logits = out.logits.float()
            del out
            if do_sample or len(logits_processor):
                scores = torch.stack([logits_processor(torch.cat([state.ids, draft[:, :j]], dim=1), logits[:, j])
                                      for j in range(gamma + 1)], dim=1)
            else:
                scores = logits
            if do_sample:
                n_acc, nxt = rejection_verify(draft, draft_probs, torch.softmax(scores, dim=-1))
            else:
                n_acc, nxt = greedy_verify(draft, scores.argmax(-1))
            # without an eos criterion plain decoding keeps extending finished rows, so they still count
            active = unfinished.bool() if has_eos else torch.ones_like(unfinished, dtype=torch.bool)
            tokens = lockstep_tokens(draft, n_acc, nxt, active)
            m = tokens.shape[1] - 1
            stats.gammas.append(gamma)
            stats.committed.append(m + 1)
            if gamma > 0:
                stats.row_accepted.append(n_acc[active].tolist())
                tracker.observe(n_acc[active].tolist(), gamma)
                if controller.positional is not None:
                    controller.positional.observe(n_acc[active].tolist(), gamma)
            done = commit(tokens)
            if not done:
                cache.crop(-(gamma - m))
                extra.commit(state.ids.shape[1])
                if hidden[0] is not None:  # features of the slots just committed, for drafts that read them
                    drafter.observe_target(hidden[0][:, :m + 1], length - 1)
                drafter.commit(state.ids.shape[1] - 1)
            if profile is not None:
                profile.update_target(gamma + 1, t_target)
                new_steps = drafter.step_seconds[n_steps:]
                if new_steps:
                    profile.update_draft(sum(new_steps) / len(new_steps))
                draft_time = sum(new_steps)
                profile.update_overhead(time.perf_counter() - t_iter - t_target - draft_time)

        if profile is not None and profile.draft is not None:
            key = getattr(drafter, "model", drafter)
            _DRAFT_LATENCY[key] = profile.draft
            _ACCEPTANCE.setdefault(key, weakref.WeakKeyDictionary())[model] = (tracker.passed, tracker.tested)
        if streamer is not None:
            streamer.end()
        stats.draft_step_seconds = list(drafter.step_seconds)
        stats.seconds = time.perf_counter() - t_start
        stats.new_tokens = int(state.ids.shape[1] - input_ids.shape[1])
        stats.profile = profile
        if generation_config.return_dict_in_generate:
            if generation_config.output_scores or generation_config.output_logits:
                logger.warning("hf_ext.speculative.generate does not return scores or logits; only sequences.")
            return GenerateDecoderOnlyOutput(sequences=state.ids, cache=cache)
        return state.ids

