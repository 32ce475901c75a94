"""Verification math of speculative decoding, as pure tensor functions.

A draft proposes ``g`` tokens ``d_1..d_g``; the target scores the committed sequence plus the draft in one forward,
giving ``g + 1`` next-token distributions ``p_0..p_g`` (``p_j`` follows ``d_j``; ``p_0`` follows the committed text).

* Greedy: accept the longest prefix of the draft equal to the target's argmax, then take the target's own argmax at
  the first mismatch (or after the whole draft). The result is exactly the target's greedy continuation.
* Sampling (Leviathan et al. / Chen et al.): accept ``d_j`` with probability ``min(1, p(d_j) / q(d_j))``; at the
  first rejection sample from the residual ``max(p - q, 0)`` normalised; if every token is accepted, sample a bonus
  token from ``p_g``. Every emitted token then follows the target's distribution exactly, whatever the draft.
  A deterministic draft (prompt lookup) is the special case ``q = one_hot(d_j)``.

Batches advance in lockstep (:func:`lockstep_tokens`): every unfinished row commits the same number of tokens, the
smallest accepted length in the batch plus one. This is our choice (it keeps the KV caches rectangular and the left
padding intact); it stays lossless because the token each row emits at that position is still the output of its own
verification at that position. Its cost, a shorter effective acceptance at batch > 1, is what the analytical model
predicts with ``alpha ** batch``.
"""

from __future__ import annotations

import torch


def greedy_verify(draft_tokens: torch.Tensor, target_argmax: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Accepted lengths and next tokens of greedy verification.

    Args:
        draft_tokens: ``(B, g)`` proposed tokens.
        target_argmax: ``(B, g + 1)`` argmax of the target's processed scores at each draft position.

    Returns:
        ``(n_accepted (B,), next_token (B,))``: the number of leading draft tokens equal to the target's choice, and
        the target's token at the first mismatch (or the bonus token when all match).
    """
    g = draft_tokens.shape[1]
    if target_argmax.shape[1] != g + 1:
        raise ValueError(f"target_argmax must have {g + 1} positions for {g} draft tokens, got {target_argmax.shape}.")
    match = (draft_tokens == target_argmax[:, :g]).long()
    n = match.cumprod(dim=1).sum(dim=1)
    return n, target_argmax.gather(1, n[:, None]).squeeze(1)


def _residual(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``max(p - q, 0)`` normalised; where it vanishes (p == q, so rejection had probability 0) fall back to p."""
    r = (p - q).clamp_min(0)
    mass = r.sum(-1, keepdim=True)
    return torch.where(mass > 0, r / mass.clamp_min(torch.finfo(r.dtype).tiny), p)


def rejection_verify(
    draft_tokens: torch.Tensor,
    draft_probs: torch.Tensor | None,
    target_probs: torch.Tensor,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Speculative (rejection) sampling.

    Args:
        draft_tokens: ``(B, g)`` proposed tokens.
        draft_probs: ``(B, g, V)`` the draft distributions the tokens were sampled from, or ``None`` for a
            deterministic draft (``q = one_hot(d)``).
        target_probs: ``(B, g + 1, V)`` the target's processed next-token distributions.
        generator: Optional random generator.

    Returns:
        ``(n_accepted (B,), next_token (B,))`` where ``next_token`` is the residual sample at the first rejection,
        or a bonus sample from ``p_g`` when every draft token was accepted.
    """
    b, g = draft_tokens.shape
    if target_probs.shape[:2] != (b, g + 1):
        raise ValueError(f"target_probs must be (B, g+1, V) = ({b}, {g + 1}, V), got {tuple(target_probs.shape)}.")
    p = target_probs.float()
    if draft_probs is None:
        q = torch.zeros_like(p[:, :g]).scatter_(-1, draft_tokens[..., None], 1.0)
    else:
        q = draft_probs.float()
    idx = draft_tokens[..., None]
    p_d = p[:, :g].gather(-1, idx).squeeze(-1)
    q_d = q.gather(-1, idx).squeeze(-1)
    u = torch.rand(b, g, generator=generator, device=p.device)
    # u < p/q written without the division: q_d > 0 for any token the draft could have proposed
    accepted = (u * q_d < p_d).long()
    n = accepted.cumprod(dim=1).sum(dim=1)
    # distribution of the emitted token at position n: residual after a rejection, p_g after full acceptance
    q_pad = torch.cat([q, torch.zeros_like(p[:, :1])], dim=1)
    rows = torch.arange(b, device=p.device)
    dist = _residual(p[rows, n], q_pad[rows, n])
    nxt = torch.multinomial(dist, 1, generator=generator).squeeze(1)
    return n, nxt


def lockstep_tokens(
    draft_tokens: torch.Tensor, n_accepted: torch.Tensor, next_token: torch.Tensor, active: torch.Tensor
) -> torch.Tensor:
    """Tokens every row commits when the batch advances by the smallest accepted length among ``active`` rows.

    Args:
        draft_tokens: ``(B, g)`` proposed tokens.
        n_accepted: ``(B,)`` accepted lengths from a verify function.
        next_token: ``(B,)`` tokens at position ``n_accepted`` from the same verify call.
        active: ``(B,)`` bool, rows still generating (finished rows do not hold the batch back).

    Returns:
        ``(B, m + 1)`` tokens with ``m = min(n_accepted[active])``: draft tokens ``0..m-1``, then per row either its
        accepted draft token ``m`` (rows that accepted more) or its own next token.
    """
    if active.any():
        m = int(n_accepted[active].min())
    else:
        m = int(n_accepted.min())
    last = next_token
    if m < draft_tokens.shape[1]:
        last = torch.where(n_accepted > m, draft_tokens[:, m], next_token)
    return torch.cat([draft_tokens[:, :m], last[:, None]], dim=1)
