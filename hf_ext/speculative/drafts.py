"""Drafts: anything that proposes tokens for the target to verify.

* :class:`ModelDrafter` wraps any causal LM sharing the target's vocabulary (its own KV cache, cropped on
  rejection).
* :func:`shallow_self_draft` builds the target's first ``k`` blocks + final norm + head as a draft that shares the
  target's weights (no copy), optionally with a reduced, frequency-ranked vocabulary head. On a small model with a
  huge vocabulary (Gemma 3 270M: 262k tokens, the head is 58 % of a decode step on this CPU) a draft that runs the
  full head cannot be fast, so the draft's head scores only the ``head_vocab`` most frequent tokens of some text
  (our choice of ranking: unigram counts on calibration text) while the target still verifies over the full vocab.
  The result is a regular ``PreTrainedModel``, so it also works as transformers' ``assistant_model``.
* :class:`PromptLookupDrafter`: n-gram lookup in the sequence itself (no model; deterministic proposals).
"""

from __future__ import annotations

import copy
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging

from ..common.arch import get_arch

logger = logging.get_logger(__name__)

# (context ids (B, T), raw logits (B, V)) -> (tokens (B,), probs (B, V) or None)
Sampler = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]


@dataclass
class DecodeState:
    """The committed sequence: ids, the 2D attention mask (``None`` when there is no padding) and position ids."""

    ids: torch.Tensor
    mask: torch.Tensor | None
    pos: torch.Tensor

    def mask_upto(self, length: int) -> torch.Tensor | None:
        if self.mask is None:
            return None
        extra = length - self.mask.shape[1]
        if extra <= 0:
            return self.mask[:, :length]
        return torch.cat([self.mask, self.mask.new_ones(self.mask.shape[0], extra)], dim=1)

    def pos_range(self, start: int, end: int) -> torch.Tensor:
        """Position ids of sequence slots ``start..end-1``; slots past the committed length continue by one."""
        length = self.pos.shape[1]
        if end <= length:
            return self.pos[:, start:end]
        extra = self.pos[:, -1:] + torch.arange(1, end - length + 1, device=self.pos.device)
        return torch.cat([self.pos, extra], dim=1)[:, start:end]


@dataclass
class DraftProposal:
    """``tokens (B, g)``; ``probs (B, g, V)`` the distributions they were sampled from, ``None`` if deterministic."""

    tokens: torch.Tensor
    probs: torch.Tensor | None


class Drafter:
    """Base class of drafts. ``step_seconds`` collects the latency of each proposed token (after the prefill)."""

    vocab_size: int | None = None
    needs_target_hidden: bool = False  # True: the verifier passes the target's last hidden states to observe_target

    def __init__(self) -> None:
        self.step_seconds: list[float] = []

    def begin(self, state: DecodeState) -> None:
        """Start a new generation."""
        self.step_seconds = []

    def propose(self, state: DecodeState, num_tokens: int, sampler: Sampler) -> DraftProposal:
        raise NotImplementedError

    def commit(self, length: int) -> None:
        """The first ``length`` slots of the sequence are final: drop any state beyond them."""

    def observe_target(self, hidden: torch.Tensor, start: int) -> None:
        """The target's last hidden states ``(B, n, H)`` of committed sequence slots ``start .. start + n - 1``
        (called after the prefill and after every verification, before :meth:`commit`, when
        ``needs_target_hidden``)."""


class ModelDrafter(Drafter):
    """A causal LM draft with its own KV cache (cropped to the committed length after every verification)."""

    def __init__(self, model: PreTrainedModel, name: str | None = None) -> None:
        super().__init__()
        self.model = model
        self.name = name or type(model).__name__
        self.vocab_size = getattr(getattr(model.config, "get_text_config", lambda: model.config)(), "vocab_size", None)
        self.cache: DynamicCache | None = None
        self.cached = 0

    def begin(self, state: DecodeState) -> None:
        super().begin(state)
        self.cache = DynamicCache(config=self.model.config)
        self.cached = 0

    @torch.no_grad()
    def propose(self, state: DecodeState, num_tokens: int, sampler: Sampler) -> DraftProposal:
        ids = state.ids
        new = ids[:, self.cached:]
        start = self.cached
        tokens, probs = [], []
        ctx = ids
        for _ in range(num_tokens):
            end = start + new.shape[1]
            t0 = time.perf_counter()
            out = self.model(input_ids=new, attention_mask=state.mask_upto(end),
                             position_ids=state.pos_range(start, end), cache=self.cache, use_cache=True,
                             logits_to_keep=1)
            tok, prob = sampler(ctx, out.logits[:, -1].float())
            if start > 0:  # the prefill is not a draft step
                self.step_seconds.append(time.perf_counter() - t0)
            if start == 0:
                # recording keeps rejected states of sliding-window layers until `commit` crops them
                self.cache.activate_past_recording()
            tokens.append(tok)
            if prob is not None:
                probs.append(prob)
            ctx = torch.cat([ctx, tok[:, None]], dim=1)
            start, new = end, tok[:, None]
        self.cached = start
        return DraftProposal(torch.stack(tokens, 1), torch.stack(probs, 1) if probs else None)

    def commit(self, length: int) -> None:
        if self.cache is None:
            return
        drop = max(self.cached - length, 0)
        if self.cached > 0:
            self.cache.crop(-drop)
        self.cached -= drop


class PromptLookupDrafter(Drafter):
    """Prompt-lookup decoding: propose the continuation of the latest earlier occurrence of the last n-gram.

    Tries n-gram sizes from ``max_ngram`` down to ``min_ngram``; rows without a match propose their last token
    repeated (a guess that costs one verification slot). Proposals are deterministic, so sampling verifies them
    with ``q = one_hot``.
    """

    def __init__(self, max_ngram: int = 3, min_ngram: int = 1) -> None:
        super().__init__()
        if not 1 <= min_ngram <= max_ngram:
            raise ValueError(f"Need 1 <= min_ngram <= max_ngram, got {min_ngram}, {max_ngram}.")
        self.max_ngram, self.min_ngram = max_ngram, min_ngram
        self.name = f"prompt-lookup(n<={max_ngram})"

    def _lookup(self, row: list[int], num_tokens: int) -> list[int]:
        for n in range(min(self.max_ngram, len(row) - 1), self.min_ngram - 1, -1):
            tail = row[-n:]
            for s in range(len(row) - n - 1, -1, -1):
                if row[s:s + n] == tail:
                    cont = row[s + n:s + n + num_tokens]
                    if cont:
                        return cont
        return []

    def propose(self, state: DecodeState, num_tokens: int, sampler: Sampler) -> DraftProposal:
        t0 = time.perf_counter()
        rows = state.ids.tolist()
        found = [self._lookup(r, num_tokens) for r in rows]
        g = max(1, max(len(f) for f in found))
        out = [(f + [r[-1]] * g)[:g] for f, r in zip(found, rows)]
        self.step_seconds.append((time.perf_counter() - t0) / g)
        return DraftProposal(torch.tensor(out, dtype=torch.long, device=state.ids.device), None)


# ------------------------------------------------------------------------------------------ shallow self-draft


class ReducedVocabHead(nn.Module):
    """An LM head that scores only ``token_ids`` and returns full-vocabulary logits (``fill`` elsewhere)."""

    def __init__(self, weight: torch.Tensor, token_ids: torch.Tensor, vocab_size: int, fill: float = -1e9) -> None:
        super().__init__()
        self.register_buffer("token_ids", token_ids.long().clone(), persistent=False)
        self.weight = nn.Parameter(weight[self.token_ids].detach().clone(), requires_grad=False)
        self.vocab_size = vocab_size
        self.fill = fill

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        sub = hidden @ self.weight.T
        full = sub.new_full((*sub.shape[:-1], self.vocab_size), self.fill)
        return full.index_copy_(-1, self.token_ids, sub)


def frequency_vocab(tokenizer: PreTrainedTokenizerBase, texts: Iterable[str], size: int,
                    always: Iterable[int] = ()) -> torch.Tensor:
    """The ``size`` most frequent token ids of ``texts`` (plus special tokens and ``always``), sorted.

    When the text holds fewer distinct tokens than ``size``, the rest are the lowest unused ids (our choice:
    BPE / SentencePiece vocabularies number earlier, more frequent pieces first).
    """
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}.")
    counts: Counter[int] = Counter()
    for text in texts:
        counts.update(tokenizer(text, add_special_tokens=False)["input_ids"])
    keep = {int(t) for t in always} | {int(t) for t in tokenizer.all_special_ids}
    for tok, _ in counts.most_common():
        if len(keep) >= size:
            break
        keep.add(tok)
    vocab_size = len(tokenizer)
    if size > vocab_size:
        raise ValueError(f"size {size} exceeds the vocabulary ({vocab_size} tokens).")
    next_id = 0
    while len(keep) < size:
        keep.add(next_id)
        next_id += 1
    return torch.tensor(sorted(keep), dtype=torch.long)


def _shallow_copy(module: nn.Module) -> nn.Module:
    new = copy.copy(module)
    new._modules = dict(module._modules)  # our own child table: replacing a child must not touch the target
    return new


def shallow_self_draft(target: PreTrainedModel, num_layers: int, head_token_ids: torch.Tensor | None = None
                       ) -> PreTrainedModel:
    """The target's first ``num_layers`` blocks + final norm + head, sharing the target's weights.

    Args:
        target: A causal LM of a family in :mod:`hf_ext.common.arch`.
        num_layers: Blocks to keep (1 .. number of blocks).
        head_token_ids: If given, the head scores only these ids (see :func:`frequency_vocab`).

    Returns:
        A ``PreTrainedModel`` view (its own config and generation config; parameters shared with ``target``).
    """
    arch = get_arch(target)
    *parents, leaf = arch.blocks.split(".")
    blocks = target.get_submodule(arch.blocks)
    if not 1 <= num_layers <= len(blocks):
        raise ValueError(f"num_layers must be in [1, {len(blocks)}], got {num_layers}.")
    config = copy.deepcopy(target.config)
    config.num_hidden_layers = num_layers
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = list(config.layer_types[:num_layers])
    draft = _shallow_copy(target)
    draft.config = config
    draft.generation_config = copy.deepcopy(target.generation_config)
    node = draft
    for name in parents:
        child = _shallow_copy(getattr(node, name))
        if hasattr(child, "config"):
            child.config = config
        setattr(node, name, child)
        node = child
    setattr(node, leaf, nn.ModuleList(list(blocks)[:num_layers]))
    if head_token_ids is not None:
        head = target.get_output_embeddings()
        draft.lm_head = ReducedVocabHead(head.weight, head_token_ids, config.vocab_size)
    draft.hf_ext_draft_info = {"num_layers": num_layers,
                               "head_vocab": None if head_token_ids is None else int(head_token_ids.numel())}
    return draft
