"""The target's forward over a span of tokens, and timing it: shared by the decoding loop (:mod:`.mixin`) and the
draft selection (:mod:`.select`)."""

from __future__ import annotations

import time
from collections.abc import Iterable

import torch

from .analytical import LatencyProfile
from .drafts import DecodeState
from .inputs import ExtraInputs


def target_forward(model, state: DecodeState, tokens: torch.Tensor, start: int, cache, keep: int,
                   extra: ExtraInputs | None = None):
    """One forward of ``model`` over ``tokens`` placed at positions ``start, start + 1, ...`` of ``state``.

    Args:
        model: The target (or any causal LM sharing ``state``'s layout).
        state: Ids, attention mask and position ids of the batch (left padding included).
        tokens: ``(B, n)`` new tokens.
        start: Index in ``state`` of the first of them.
        cache: The KV cache holding positions ``< start``; it grows by ``n``.
        keep: Positions whose logits to compute (``logits_to_keep``), counted from the end.
        extra: Model inputs other than ids, mask, positions and cache (see :class:`~.inputs.ExtraInputs`).

    Returns:
        The model's output.
    """
    end = start + tokens.shape[1]
    more = extra.for_forward(start, end) if extra else {}
    return model(input_ids=tokens, attention_mask=state.mask_upto(end), position_ids=state.pos_range(start, end),
                 cache=cache, use_cache=True, logits_to_keep=keep, **more)


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously), so that a timer measures the work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_target_forwards(model, state: DecodeState, cache, sizes: Iterable[int],
                         extra: ExtraInputs | None = None) -> LatencyProfile:
    """Time one target forward of each size in ``sizes`` on the current cache, then crop the probes away.

    Args:
        model: The target.
        state: The batch's decode state; its last token is the probe token, repeated ``k`` times.
        cache: The target's KV cache up to the token before the last one; left as it was.
        sizes: Numbers of new tokens to time (a size-1 warm-up runs first).
        extra: Extra model inputs, as for :func:`target_forward`.

    Returns:
        A :class:`~.analytical.LatencyProfile` with ``target[k]`` in seconds.
    """
    profile = LatencyProfile()
    start = state.ids.shape[1] - 1
    for k in (1, *sizes):  # the first size-1 call is a warm-up
        probe = state.ids[:, -1:].expand(-1, k)
        sync(model.device)
        t0 = time.perf_counter()
        target_forward(model, state, probe, start, cache, k, extra)
        sync(model.device)  # CUDA runs asynchronously: time the work, not the launch
        seconds = time.perf_counter() - t0
        cache.crop(-k)
        profile.target[k] = seconds
    return profile
