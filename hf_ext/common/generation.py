"""Batched, left-padded generation over ``model.generate``: the glue capabilities share for scoring or sampling
many prompts (greedy or sampled, with optional stop strings, prompt truncation and a progress bar)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import torch
from transformers.utils import logging

if TYPE_CHECKING:  # the modeling stack is not needed to define these helpers
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.get_logger(__name__)


@contextlib.contextmanager
def left_padding(tokenizer: PreTrainedTokenizerBase, truncation_side: str | None = None) -> Iterator[None]:
    """Pad on the left (what decoder-only ``generate`` needs), with the eos token when there is no pad token.

    Args:
        tokenizer: Changed in place while the context is open; its padding side, pad token and truncation side are
            restored on exit, also on error.
        truncation_side: Truncation side to use inside the context (``None``: leave it as it is).
    """
    side, pad, trunc = tokenizer.padding_side, tokenizer.pad_token, tokenizer.truncation_side
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if truncation_side is not None:
        tokenizer.truncation_side = truncation_side
    try:
        yield
    finally:
        tokenizer.padding_side, tokenizer.truncation_side = side, trunc
        if pad is None:
            tokenizer.pad_token = None


class StopOnText:
    """Stop each sequence once its continuation's decoded last ``window`` tokens contain a stop string.

    ``generate(stop_strings=...)`` precomputes a table over the whole vocabulary on every call (seconds for
    Gemma's 262k tokens); decoding a few tokens per step is far cheaper for short continuations.

    Args:
        tokenizer: Decodes the tails.
        stops: Strings that end a continuation.
        prompt_len: Length of the (padded) prompt: only tokens after it are checked.
        window: How many of the last tokens to decode at each step (a stop string must fit in them).
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stops: Sequence[str], prompt_len: int, window: int = 6):
        self.tokenizer, self.stops, self.prompt_len, self.window = tokenizer, list(stops), prompt_len, window

    def __call__(self, input_ids: torch.LongTensor, scores=None, **kwargs) -> torch.BoolTensor:
        new = input_ids[:, self.prompt_len:]
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        if new.shape[1] == 0:
            return done
        tails = self.tokenizer.batch_decode(new[:, -self.window:], skip_special_tokens=True)
        for i, text in enumerate(tails):
            done[i] = any(s in text for s in self.stops)
        return done


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """``text`` up to (not including) the earliest occurrence of any of ``stops``; unchanged when none occurs."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=len(text))
    return text[:cut]


@torch.no_grad()
def batched_generate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
                     max_new_tokens: int, *, batch_size: int = 8, temperature: float = 0.0, top_p: float = 1.0,
                     seed: int | None = None, max_prompt_tokens: int | None = None,
                     stop: Sequence[str] | None = None, cut_stop: bool = False, progress: bool = False,
                     desc: str = "generate", **generate_kwargs) -> list[str]:
    """Continuations of ``prompts`` (decoded without the prompt and without special tokens), in left-padded batches.

    Args:
        model: A causal LM; put in eval mode for the call and restored to its previous mode afterwards.
        tokenizer: Its tokenizer; padding side, pad token and truncation side are restored afterwards.
        prompts: Texts to continue.
        max_new_tokens: Tokens to generate per prompt (>= 1).
        batch_size: Prompts per ``generate`` call.
        temperature: ``0`` decodes greedily; above it samples with ``temperature`` and ``top_p``.
        top_p: Nucleus sampling threshold (sampling only).
        seed: When set, each batch starts from ``torch.manual_seed(seed + batch index)`` so a run is reproducible
            regardless of what ran before; ``None`` leaves the global generator alone.
        max_prompt_tokens: Prompts longer than this keep their last ``max_prompt_tokens`` tokens (``None``: no
            truncation).
        stop: Strings that end a continuation early (checked on the decoded tail of each sequence, see
            :class:`StopOnText`); the text returned still holds the stop string unless ``cut_stop``.
        cut_stop: Cut each decoded continuation before its first stop string.
        progress: Show a tqdm bar over the batches.
        desc: The bar's label.
        generate_kwargs: Passed to ``model.generate`` as they are (``eos_token_id=``, ``repetition_penalty=``, ...).

    Returns:
        One continuation per prompt, in order.
    """
    from tqdm.auto import tqdm

    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if max_prompt_tokens is not None and max_prompt_tokens < 1:
        raise ValueError(f"max_prompt_tokens must be >= 1 or None, got {max_prompt_tokens}.")
    device = next(model.parameters()).device
    sampling = dict(do_sample=True, temperature=temperature, top_p=top_p) if temperature > 0 else \
        dict(do_sample=False, temperature=None, top_p=None, top_k=None)  # None: no warning about unused settings
    truncate = dict(truncation=True, max_length=max_prompt_tokens) if max_prompt_tokens is not None else {}
    was_training = model.training
    model.eval()
    out: list[str] = []
    try:
        with left_padding(tokenizer, truncation_side="left"):
            for b, start in enumerate(tqdm(range(0, len(prompts), batch_size), desc=desc, disable=not progress)):
                enc = tokenizer(list(prompts[start : start + batch_size]), return_tensors="pt", padding=True,
                                **truncate).to(device)
                prompt_len = enc["input_ids"].shape[1]
                if seed is not None:
                    torch.manual_seed(seed + b)
                extra = dict(generate_kwargs)
                if stop:
                    from transformers import StoppingCriteriaList

                    extra["stopping_criteria"] = StoppingCriteriaList(
                        [*extra.get("stopping_criteria", []), StopOnText(tokenizer, stop, prompt_len)])
                ids = model.generate(**enc, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                     **sampling, **extra)
                texts = tokenizer.batch_decode(ids[:, prompt_len:], skip_special_tokens=True)
                out.extend(cut_at_stop(t, stop) if stop and cut_stop else t for t in texts)
    finally:
        model.train(was_training)
    return out
