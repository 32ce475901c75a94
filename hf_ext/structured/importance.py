"""Group importance scores and the removal plan, as pure functions.

A *group* is a head unit (a key/value group with its query heads, or one query head; see ``surgery``) or an MLP
channel. Every score is computed per block and compared only inside the block (heads with heads, channels with
channels), because each block loses the same share (see :func:`allocate`).

Definitions (``W`` the projection weights of a group: rows of q/k/v/up/gate, columns of o/down; ``x_j`` the
input column ``j`` of the output projection (o / down) over the calibration tokens; ``W_out[:, j]`` its column):

* ``magnitude``: ``sum_{w in group} w^2``.
* ``activation``: ``A = sqrt(sum_{j in group} mean_t(x_tj^2) * ||W_out[:, j]||^2)``: the root-mean-square size of
  what the group writes into the residual stream (for an MLP channel it is exact, for a head it ignores cross terms
  between the head's columns). This is the Wanda idea (``|W| * ||x||``) applied to the output side of a group.
* ``taylor`` (LLM-Pruner-style baseline, backprop): ``sum_{w in group} |w * dL/dw|`` with ``dL/dw`` the gradient
  of the calibration language-model loss accumulated over all calibration windows (element-wise first order).
* ``mini_llm`` (feature-map sensitivity, forward passes only):
  ``A * (1 + lambda * soft(|g|, c * se) / mean_block(|g|))``, where
  ``g`` is a zeroth-order (SPSA) estimate of ``dL/dm`` for a gate ``m`` (= 1) that scales the group's feature map
  (its output columns). ``dL/dm = sum_{w in group} w * dL/dw`` is the first-order change of the loss when the
  group's output is scaled, the quantity a backprop Taylor score uses. The estimate
  (:mod:`~hf_ext.structured.zeroth_order`, :mod:`~hf_ext.structured.gate_gradient`) perturbs one block's heads,
  then its channels (``spsa_scope``), with antithetic pairs, every calibration window in its own direction, and runs
  of orthogonal directions; ``se`` is each gate's standard error over its measurements and ``soft``
  soft-thresholds at ``c`` of them (``spsa_threshold``). :func:`hf_ext.structured.gradient_agreement` reports its
  cosine with the autograd gate gradient.

Weight space or gate space. The MINI-LLM paper's zeroth-order step is the MeZO-style estimate in *weight* space
(``g_W = [L(W + eps Z) - L(W - eps Z)] / (2 eps) * Z`` over every weight, as in REFERENCES.md), from which a
group's sensitivity is aggregated; its exact equations are not public in verifiable form. We implement it in
*gate* space: aggregated over a group, the weight-space estimate ``sum_{w in group} w * g_w`` has the same
expectation, ``dL/dm``, but its variance carries every weight direction of every group (hundreds of millions),
while the gate space has one dimension per group, so the same number of forward passes gives a far more accurate
estimate of exactly the quantity the score uses. Forward passes only, no autograd, inference-level memory.

Other choices of ours: fusing magnitude and activation through ``A``; the multiplicative
``(1 + lambda * normalized |g|)`` fusion, which lets the gradient reorder groups of similar size without letting
estimation noise erase a large feature map (``lambda = 0`` reduces ``mini_llm`` to ``activation``);
soft-thresholding at ``c = 1`` standard error, so only components that stand out of their own noise move a group;
antithetic evaluation on the same calibration windows (common random numbers), so the difference is not swamped by
data noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class BlockScores:
    """Importance of the head units (``heads``) and MLP channels (``channels``) of one block; higher = keep."""

    heads: torch.Tensor
    channels: torch.Tensor


def _per_head(rows_value: torch.Tensor, n: int) -> torch.Tensor:
    """Sum a per-row (or per-column) quantity over each of ``n`` equal consecutive slices."""
    return rows_value.reshape(n, -1).sum(1)


def aggregate_heads(q_head: torch.Tensor, kv_head: torch.Tensor, granularity: str) -> torch.Tensor:
    """Combine per-query-head and per-key/value-head parts into per-unit scores."""
    if granularity == "query":
        return q_head
    n_kv = kv_head.numel()
    return q_head.reshape(n_kv, -1).sum(1) + kv_head


def magnitude_scores(w: dict[str, torch.Tensor], n_heads: int, n_kv: int, granularity: str) -> BlockScores:
    """``w`` maps "q", "k", "v", "o", "down" to weights and "up" to a tuple of the MLP input projections."""
    q = _per_head((w["q"].float() ** 2).sum(1), n_heads) + _per_head((w["o"].float() ** 2).sum(0), n_heads)
    kv = _per_head((w["k"].float() ** 2).sum(1), n_kv) + _per_head((w["v"].float() ** 2).sum(1), n_kv)
    ch = sum((u.float() ** 2).sum(1) for u in w["up"]) + (w["down"].float() ** 2).sum(0)
    return BlockScores(aggregate_heads(q, kv, granularity), ch)


def activation_scores(w: dict[str, torch.Tensor], o_col_sq: torch.Tensor, down_col_sq: torch.Tensor,
                      n_heads: int, n_kv: int, granularity: str) -> BlockScores:
    """``o_col_sq`` / ``down_col_sq``: mean over calibration tokens of the squared input of each column."""
    o_energy = o_col_sq.float() * (w["o"].float() ** 2).sum(0)
    heads = aggregate_heads(_per_head(o_energy, n_heads), torch.zeros(n_kv), granularity).sqrt()
    channels = (down_col_sq.float() * (w["down"].float() ** 2).sum(0)).sqrt()
    return BlockScores(heads, channels)


def taylor_scores(w: dict[str, torch.Tensor], g: dict[str, torch.Tensor], n_heads: int, n_kv: int,
                  granularity: str) -> BlockScores:
    """Element-wise first-order Taylor ``sum |w * dL/dw|`` per group (``g`` has the same keys as ``w``)."""
    def s(key: str) -> torch.Tensor:
        return (w[key].float() * g[key].float()).abs()

    q = _per_head(s("q").sum(1), n_heads) + _per_head(s("o").sum(0), n_heads)
    kv = _per_head(s("k").sum(1), n_kv) + _per_head(s("v").sum(1), n_kv)
    ch = sum((u.float() * gu.float()).abs().sum(1) for u, gu in zip(w["up"], g["up"])) + s("down").sum(0)
    return BlockScores(aggregate_heads(q, kv, granularity), ch)


def soft_threshold(g: torch.Tensor, tau: float) -> torch.Tensor:
    """``sign(g) * max(|g| - tau, 0)``: keeps only the part of an estimate that stands above its noise level."""
    return g.sign() * (g.abs() - tau).clamp_min(0)


def fms_scores(activation: BlockScores, gate_grad: BlockScores, gradient_weight: float,
               noise: float | BlockScores = 0.0) -> BlockScores:
    """MINI-LLM feature-map sensitivity: ``A * (1 + lambda * soft(|g|, noise) / mean(|g|))`` per block and type.

    ``noise`` is the soft threshold (a number, or per gate: ``spsa_threshold`` standard errors of the SPSA
    estimate): with pure noise the score falls back to ``A``; a gradient that stands out reorders groups.
    """
    def fuse(a: torch.Tensor, g: torch.Tensor, tau) -> torch.Tensor:
        scale = g.abs().float().mean().clamp_min(1e-12)
        return a * (1.0 + gradient_weight * soft_threshold(g.float(), tau).abs() / scale)

    th, tc = (noise.heads, noise.channels) if isinstance(noise, BlockScores) else (noise, noise)
    return BlockScores(fuse(activation.heads, gate_grad.heads, th), fuse(activation.channels, gate_grad.channels, tc))


@dataclass(frozen=True)
class BlockBudget:
    """What one block can give up: head-removal steps, parameters per step, MLP channels and their size."""

    head_steps: int
    params_per_head_step: int
    channels: int
    params_per_channel: int
    total_params: int
    protected: bool = False


@dataclass(frozen=True)
class RemovalPlan:
    head_steps: list[int]
    channels: list[int]
    removed_params: int
    total_params: int

    @property
    def achieved_ratio(self) -> float:
        return self.removed_params / self.total_params


def allocate(budgets: Sequence[BlockBudget], ratio: float) -> RemovalPlan:
    """Split ``ratio`` of all prunable parameters over the unprotected blocks (our choice, LLM-Pruner's habit: the
    same share in every unprotected block, so protected blocks raise the share of the others).

    Each unprotected block removes ``round(r * head_steps)`` head steps (capped so heads alone never exceed the
    block's share) and then enough MLP channels to reach the target: channels are fine-grained, so the achieved
    ratio lands within one channel per block of the target.

    Raises:
        ValueError: every block protected, a share >= 1, or a block that would lose every head or channel.
    """
    if not 0 < ratio < 1:
        raise ValueError(f"ratio must be in (0, 1), got {ratio!r}.")
    total = sum(b.total_params for b in budgets)
    open_ = [i for i, b in enumerate(budgets) if not b.protected]
    if not open_:
        raise ValueError("Every block is protected (protect_first + protect_last >= number of blocks).")
    target = ratio * total
    share = target / sum(budgets[i].total_params for i in open_)
    if share >= 1:
        raise ValueError(
            f"ratio {ratio} cannot be reached: the unprotected blocks would have to lose {share:.0%} of their "
            "parameters. Lower the ratio or protect fewer blocks."
        )
    heads, chans = [0] * len(budgets), [0] * len(budgets)
    for i in open_:
        b = budgets[i]
        h = round(share * b.head_steps)
        h = min(h, math.floor(share * b.total_params / b.params_per_head_step))
        if h >= b.head_steps:
            raise ValueError(
                f"ratio {ratio} would remove every attention head of block {i} ({share:.0%} of each unprotected "
                f"block, {b.head_steps} head units there). Lower the ratio."
            )
        heads[i] = h
    rest = target - sum(heads[i] * budgets[i].params_per_head_step for i in open_)
    capacity = sum(budgets[i].channels * budgets[i].params_per_channel for i in open_)
    frac = rest / capacity
    for i in open_:
        c = round(frac * budgets[i].channels)
        if c >= budgets[i].channels:
            raise ValueError(f"ratio {ratio} would remove every MLP channel of block {i}. Lower the ratio.")
        chans[i] = max(c, 0)
    removed = sum(heads[i] * budgets[i].params_per_head_step + chans[i] * budgets[i].params_per_channel
                  for i in open_)
    return RemovalPlan(heads, chans, removed, total)


def select_heads(scores: torch.Tensor, steps: int, n_kv: int, group_size: int,
                 granularity: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Kept (query heads, key/value heads), sorted, after ``steps`` removal steps of the lowest-scoring units.

    ``kv_group``: ``scores`` has one entry per key/value head; ``steps`` groups go with all their query heads.
    ``query``: one entry per query head; the ``steps`` lowest heads of every key/value group go.
    """
    if granularity == "kv_group":
        keep_kv = torch.sort(torch.topk(scores, n_kv - steps).indices).values
        return (keep_kv[:, None] * group_size + torch.arange(group_size)).reshape(-1), keep_kv
    per_group = scores.reshape(n_kv, group_size)
    keep_in_group = torch.sort(torch.topk(per_group, group_size - steps, dim=1).indices, dim=1).values
    return (keep_in_group + torch.arange(n_kv)[:, None] * group_size).reshape(-1), torch.arange(n_kv)


def select_channels(scores: torch.Tensor, remove: int) -> torch.Tensor:
    return torch.sort(torch.topk(scores, scores.numel() - remove).indices).values
