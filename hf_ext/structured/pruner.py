"""Glue: calibrate, score, plan and cut a model in place (the math lives in ``importance`` and ``surgery``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging

from ..common.arch import get_arch, get_blocks
from ..common.capture import collect_inputs
from ..common.data import calibration_batches
from ..common.utils import requires_grad_only
from .config import StructuredPruningConfig
from .gate_gradient import estimate_gate_gradient
from .importance import (
    BlockBudget,
    BlockScores,
    RemovalPlan,
    activation_scores,
    allocate,
    fms_scores,
    magnitude_scores,
    select_channels,
    select_heads,
    taylor_scores,
)
from .surgery import (
    BlockLayout,
    block_prunable_params,
    count_prunable,
    model_layouts,
    prune_block,
    resolve_granularity,
    unit_params,
)

logger = logging.get_logger(__name__)


@dataclass
class PruneReport:
    """What a pruning run did: parameter counts, the plan, timings."""

    params_before: int
    params_after: int
    prunable_before: int
    prunable_after: int
    plan: RemovalPlan
    layer_shapes: list[dict[str, int]]
    scoring_seconds: float
    total_seconds: float
    extra: dict = field(default_factory=dict)

    @property
    def achieved_ratio(self) -> float:
        return 1 - self.prunable_after / self.prunable_before


def plan_for(model: nn.Module, cfg: StructuredPruningConfig) -> tuple[list[BlockLayout], list[str], RemovalPlan]:
    """Validate the model and the ratio and compute how many heads / channels each block loses (no data needed)."""
    arch = get_arch(model)
    blocks = get_blocks(model)
    layouts = model_layouts(model)
    gran = [resolve_granularity(cfg.head_granularity, lay) for lay in layouts]
    n = len(blocks)
    budgets = []
    for i, (block, lay) in enumerate(zip(blocks, layouts)):
        steps, per_step, per_channel = unit_params(block, arch, lay, gran[i])
        total = block_prunable_params(block, arch)
        protected = i < cfg.protect_first or i >= n - cfg.protect_last
        budgets.append(BlockBudget(steps, per_step, lay.intermediate_size, per_channel, total, protected))
    plan = allocate(budgets, float(cfg.ratio))
    if plan.removed_params == 0:
        open_ = [b for b in budgets if not b.protected]
        capacity = sum(b.channels * b.params_per_channel for b in open_)
        total = sum(b.total_params for b in budgets)
        smallest = 0.5 * capacity / (max(b.channels for b in open_) * total)
        raise ValueError(f"ratio {cfg.ratio} removes no head or channel of this model (one MLP channel per block "
                         f"needs a ratio of about {smallest:.4f} or more). Raise the ratio.")
    if abs(plan.achieved_ratio - cfg.ratio) > 0.01:
        logger.warning("Structured pruning achieves %.4f instead of ratio %.4f: head units are too coarse here.",
                       plan.achieved_ratio, cfg.ratio)
    return layouts, gran, plan


def _weights(block: nn.Module, arch, grad: bool = False) -> dict:
    def get(path: str) -> torch.Tensor:  # scores are small and computed on the CPU, whatever the model's device
        p = block.get_submodule(path).weight
        return (p.grad if grad else p.detach()).float().cpu()

    return {"q": get(arch.q), "k": get(arch.k), "v": get(arch.v), "o": get(arch.o),
            "up": tuple(get(p) for p in arch.up), "down": get(arch.down)}


def _batches(ids: torch.Tensor, batch_size: int, device: torch.device):
    for s in range(0, len(ids), batch_size):
        yield ids[s : s + batch_size].to(device)


@torch.no_grad()
def _output_input_sq(model: nn.Module, ids: torch.Tensor, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per block: mean squared input of every column of the attention and MLP output projections."""
    arch = get_arch(model)
    linears = {}
    for i, block in enumerate(get_blocks(model)):
        linears[f"{i}.o"] = block.get_submodule(arch.o)
        linears[f"{i}.down"] = block.get_submodule(arch.down)
    device = next(model.parameters()).device
    with collect_inputs(linears, gram=False) as stats:
        for b in _batches(ids, batch_size, device):
            model(input_ids=b, use_cache=False)
    n = len(get_blocks(model))
    return [(stats[f"{i}.o"].col_norm.cpu() ** 2, stats[f"{i}.down"].col_norm.cpu() ** 2) for i in range(n)]


def _taylor_grads(model: nn.Module, ids: torch.Tensor, batch_size: int) -> None:
    """Accumulate dL/dW of every prunable projection weight in ``.grad`` (mean calibration loss)."""
    arch = get_arch(model)
    weights = [block.get_submodule(p).weight for block in get_blocks(model) for p in arch.linears]
    device = next(model.parameters()).device
    with requires_grad_only(model, weights):
        for w in weights:
            w.grad = None
        n_batches = -(-len(ids) // batch_size)
        for b in tqdm(list(_batches(ids, batch_size, device)), desc="taylor backprop", leave=False):
            loss = model(input_ids=b, labels=b, use_cache=False).loss / n_batches
            loss.backward()


def compute_scores(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None, cfg: StructuredPruningConfig,
                   layouts: list[BlockLayout], gran: list[str], details: dict | None = None) -> list[BlockScores]:
    """Importance of every head unit and MLP channel of every block under ``cfg.criterion``.

    Args:
        details: When given, ``mini_llm`` stores its gate-gradient estimate there (``gate_gradient``,
            ``stderr``, ``spsa``: passes and measurements), e.g. to compare it with autograd afterwards.
    """
    arch = get_arch(model)
    blocks = get_blocks(model)
    shape = [(lay.num_heads, lay.num_kv_heads, g) for lay, g in zip(layouts, gran)]
    if cfg.criterion == "magnitude":
        return [magnitude_scores(_weights(b, arch), *s) for b, s in zip(blocks, shape)]
    if tokenizer is None:
        raise ValueError(f"criterion {cfg.criterion!r} calibrates on text and needs a tokenizer.")
    ids = calibration_batches(tokenizer, cfg.calibration, cfg.n_samples, cfg.seqlen, cfg.seed)
    was_training = model.training
    model.eval()
    try:
        if cfg.criterion == "taylor":
            _taylor_grads(model, ids, cfg.batch_size)
            scores = [taylor_scores(_weights(b, arch), _weights(b, arch, grad=True), *s) for b, s in zip(blocks, shape)]
            for b in blocks:
                for p in arch.linears:
                    b.get_submodule(p).weight.grad = None
            return scores
        sq = _output_input_sq(model, ids, cfg.batch_size)
        act = [activation_scores(_weights(b, arch), o_sq, d_sq, *s) for b, (o_sq, d_sq), s in zip(blocks, sq, shape)]
        if cfg.criterion == "activation":
            return act
        grads, stderr, info = estimate_gate_gradient(model, ids, cfg, layouts, gran)
        if details is not None:
            details.update(gate_gradient=grads, stderr=stderr, spsa=info)
        c = cfg.spsa_threshold
        noise = [BlockScores(c * e.heads, c * e.channels) for e in stderr]
        kept = sum(int((g.abs() > t).sum()) for gs, ts in zip(grads, noise)
                   for g, t in ((gs.heads, ts.heads), (gs.channels, ts.channels)))
        logger.info("mini_llm: %d of %d group gradients above %.1f standard errors (%d passes).", kept,
                    sum(g.heads.numel() + g.channels.numel() for g in grads), c, info["passes"])
        return [fms_scores(a, g, cfg.gradient_weight, t) for a, g, t in zip(act, grads, noise)]
    finally:
        model.train(was_training)


def select_groups(scores: list[BlockScores], layouts: list[BlockLayout], gran: list[str],
                  plan: RemovalPlan) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per block: sorted kept (query heads, key/value heads, MLP channels) under ``plan``."""
    out = []
    for i, lay in enumerate(layouts):
        heads, kv = select_heads(scores[i].heads, plan.head_steps[i], lay.num_kv_heads, lay.group_size, gran[i])
        out.append((heads, kv, select_channels(scores[i].channels, plan.channels[i])))
    return out


def selection_gates(selection, layouts: list[BlockLayout], gran: list[str]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """0/1 gates for :func:`~hf_ext.structured.surgery.gated` that zero exactly the groups a selection removes."""
    gates = []
    for (heads, kv, channels), lay, g in zip(selection, layouts, gran):
        head_gate = torch.zeros(lay.num_kv_heads if g == "kv_group" else lay.num_heads)
        head_gate[kv if g == "kv_group" else heads] = 1.0
        channel_gate = torch.zeros(lay.intermediate_size)
        channel_gate[channels] = 1.0
        gates.append((head_gate, channel_gate))
    return gates


def prune_in_place(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None,
                   cfg: StructuredPruningConfig, scores: list[BlockScores] | None = None) -> PruneReport:
    """Score, plan and physically prune ``model``; writes ``layer_shapes`` / ``achieved_ratio`` into ``cfg``.

    Args:
        scores: Precomputed scores (from :func:`compute_scores` with the same config) to skip calibration,
            e.g. to prune one scoring at several ratios.
    """
    start = time.perf_counter()
    arch = get_arch(model)
    params_before = sum(p.numel() for p in model.parameters())
    prunable_before = count_prunable(model)
    layouts, gran, plan = plan_for(model, cfg)
    t0 = time.perf_counter()
    details: dict = {}
    if scores is None:
        scores = compute_scores(model, tokenizer, cfg, layouts, gran, details=details)
    scoring = time.perf_counter() - t0
    selection = select_groups(scores, layouts, gran, plan)
    new_layouts = []
    for i, (block, lay) in enumerate(zip(get_blocks(model), layouts)):
        if plan.head_steps[i] == 0 and plan.channels[i] == 0:
            new_layouts.append(lay)
            continue
        new_layouts.append(prune_block(block, arch, lay, *selection[i]))
    cfg.layer_shapes = [lay.as_dict() for lay in new_layouts]
    prunable_after = count_prunable(model)
    cfg.achieved_ratio = round(1 - prunable_after / prunable_before, 6)
    report = PruneReport(params_before, sum(p.numel() for p in model.parameters()), prunable_before,
                         prunable_after, plan, cfg.layer_shapes, scoring, time.perf_counter() - start)
    if "spsa" in details:
        report.extra["spsa"] = details["spsa"]
    logger.info("Structured pruning (%s): removed %.2f%% of prunable parameters in %.1f s.", cfg.criterion,
                100 * report.achieved_ratio, report.total_seconds)
    return report
