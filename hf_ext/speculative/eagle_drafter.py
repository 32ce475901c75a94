"""The verifier's side of an :class:`~.eagle.EagleDraftModel`: its own KV cache over positions computed from real
target features, cropped back to them after every verification.

Slot ``t`` of the sequence is draft position ``t - 1``: it reads the target feature of slot ``t - 1`` and the
embedding of token ``t`` (mask and position id of slot ``t``). After a verification the target's features of the
committed slots arrive through :meth:`EagleDrafter.observe_target`; positions the draft computed from its own
estimates are dropped and recomputed from the real features on the next proposal (one forward over the accepted
tokens, as EAGLE does).
"""

from __future__ import annotations

import time

import torch
from transformers import DynamicCache

from .drafts import DecodeState, Drafter, DraftProposal, Sampler


class EagleDrafter(Drafter):
    """Drafter for an :class:`~.eagle.EagleDraftModel` bound to its target."""

    needs_target_hidden = True

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model
        self.name = f"eagle-{model.config.num_hidden_layers}L"
        self.vocab_size = model.config.target_vocab_size
        self.cache: DynamicCache | None = None
        self.real = 0  # draft positions in the cache computed from real target features
        self.feats: torch.Tensor | None = None  # target features of slots 0 .. n-1

    def begin(self, state: DecodeState) -> None:
        super().begin(state)
        self.cache = DynamicCache(config=self.model.config)
        self.real = 0
        self.feats = None

    def observe_target(self, hidden: torch.Tensor, start: int) -> None:
        hidden = hidden.detach()
        self.feats = hidden if self.feats is None else torch.cat([self.feats[:, :start], hidden], dim=1)

    def _step(self, state: DecodeState, feats: torch.Tensor, first_slot: int, end_slot: int):
        mask = state.mask_upto(end_slot)
        return self.model(hidden_states=feats, input_ids=_slot_ids(state, first_slot, end_slot),
                          attention_mask=None if mask is None else mask[:, 1:end_slot],
                          position_ids=state.pos_range(first_slot, end_slot), cache=self.cache, use_cache=True,
                          logits_to_keep=1)

    @torch.no_grad()
    def propose(self, state: DecodeState, num_tokens: int, sampler: Sampler) -> DraftProposal:
        length = state.ids.shape[1]
        if self.feats is None or self.feats.shape[1] < length - 1:
            raise RuntimeError("EagleDrafter needs the target's features of every committed slot but the last.")
        _crop_to(self.cache, self.real)
        tokens, probs = [], []
        ctx = state.ids
        first = self.real + 1  # first slot whose draft position is not cached yet
        prefill = self.real == 0
        t0 = time.perf_counter()
        out = self._step(state, self.feats[:, first - 1:length - 1], first, length)
        self.real = length - 1
        for k in range(num_tokens):
            if k > 0:
                t0 = time.perf_counter()
                out = self._step(DecodeState(ctx, state.mask, state.pos), out.hidden_states[:, -1:], length + k - 1,
                                 length + k)
            logits = self.model.draft_to_target(out.logits[:, -1].float())
            tok, prob = sampler(ctx, logits)
            if not (prefill and k == 0):  # the prompt's catch-up is a prefill, not a draft step
                self.step_seconds.append(time.perf_counter() - t0)
            tokens.append(tok)
            if prob is not None:
                probs.append(prob)
            ctx = torch.cat([ctx, tok[:, None]], dim=1)
        return DraftProposal(torch.stack(tokens, 1), torch.stack(probs, 1) if probs else None)

    def commit(self, length: int) -> None:
        if self.cache is not None:
            self.real = min(self.real, length)
            _crop_to(self.cache, self.real)


def _slot_ids(state: DecodeState, first_slot: int, end_slot: int) -> torch.Tensor:
    return state.ids[:, first_slot:end_slot]


def _crop_to(cache: DynamicCache, length: int) -> None:
    """Keep the first ``length`` positions (transformers' ``crop`` takes the number to remove)."""
    drop = cache.get_seq_length() - length
    if drop > 0:
        cache.crop(-drop)
