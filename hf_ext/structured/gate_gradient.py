"""The loss gradient w.r.t. group gates: forward-only estimate (``mini_llm``), autograd reference, their agreement.

A gate ``m`` (= 1) scales one group's feature map (see :func:`~hf_ext.structured.surgery.gated`);
``dL/dm = sum_{w in group} w * dL/dw`` is the first-order change of the loss when the group is scaled. The estimate
perturbs one *unit* at a time (``spsa_scope``: a block's heads and channels together, each type alone, or every
gate of the model at once) with :func:`~hf_ext.structured.zeroth_order.spsa_estimate`; gates of other units stay
at 1, so no other block's gradient adds to a unit's noise.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from transformers.utils import logging

from ..common.data import calibration_batches
from ..common.utils import requires_grad_only
from .config import StructuredPruningConfig
from .importance import BlockScores
from .surgery import BlockLayout, gated, head_units, model_layouts, resolve_granularity
from .zeroth_order import auto_queries, spsa_estimate

logger = logging.get_logger(__name__)

Part = tuple[int, str]  # (block index, "heads" | "channels")


def _size(lay: BlockLayout, gran: str, part: str) -> int:
    return head_units(lay, gran) if part == "heads" else lay.intermediate_size


def estimate_units(n_blocks: int, scope: str) -> list[list[Part]]:
    """The gate sets estimated together under ``scope`` ("block", "type" or "model")."""
    parts = [[(i, "heads"), (i, "channels")] for i in range(n_blocks)]
    if scope == "block":
        return parts
    if scope == "type":
        return [[p] for block in parts for p in block]
    return [[p for block in parts for p in block]]


def window_losses(model: nn.Module, ids: torch.Tensor, batch_size: int, gran: Sequence[str],
                  gates_for=None) -> torch.Tensor:
    """Mean next-token loss of every window; ``gates_for(start, stop)`` gives the gates of windows start..stop-1."""
    device = next(model.parameters()).device
    n_blocks = len(gran)
    out = []
    for s in range(0, len(ids), batch_size):
        b = ids[s : s + batch_size].to(device)
        gates = gates_for(s, s + len(b)) if gates_for is not None else [None] * n_blocks
        with gated(model, gates, gran):
            logits = model(input_ids=b, use_cache=False).logits
        labels = torch.cat([b[:, 1:], torch.full_like(b[:, :1], -100)], 1)
        ce = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100, reduction="none")
        out.append(ce.view(len(b), -1)[:, :-1].mean(1).double().cpu())
    return torch.cat(out)


def _unit_gates(unit: list[Part], values: torch.Tensor, layouts, gran) -> list:
    """Per-block gates for a slice of windows: ``values`` (windows, unit dim) for the unit's parts, 1 elsewhere."""
    gates: list = [None] * len(layouts)
    offset = 0
    for i, part in unit:
        n = _size(layouts[i], gran[i], part)
        piece = values[:, offset : offset + n]
        offset += n
        if gates[i] is None:
            ones = torch.ones(len(values), 1)
            gates[i] = [ones.expand(-1, _size(layouts[i], gran[i], "heads")),
                        ones.expand(-1, _size(layouts[i], gran[i], "channels"))]
        gates[i][0 if part == "heads" else 1] = piece
    return [None if g is None else tuple(g) for g in gates]


def _to_blocks(unit_values: list[tuple[list[Part], torch.Tensor]], layouts, gran) -> list[BlockScores]:
    pieces = {}
    for unit, vec in unit_values:
        offset = 0
        for i, part in unit:
            n = _size(layouts[i], gran[i], part)
            pieces[(i, part)] = vec[offset : offset + n]
            offset += n
    return [BlockScores(pieces[(i, "heads")], pieces[(i, "channels")]) for i in range(len(layouts))]


@torch.no_grad()
def estimate_gate_gradient(model: nn.Module, ids: torch.Tensor, cfg: StructuredPruningConfig,
                           layouts: list[BlockLayout], gran: list[str],
                           progress: bool = True) -> tuple[list[BlockScores], list[BlockScores], dict]:
    """Forward-only estimate of ``dL/dm`` for every group: (gradients, standard errors, run info) per block."""
    units = estimate_units(len(layouts), cfg.spsa_scope)
    dims = [sum(_size(layouts[i], gran[i], p) for i, p in unit) for unit in units]
    n = len(ids)
    queries = [cfg.spsa_queries or auto_queries(d, n, cfg.spsa_per_window) for d in dims]
    passes = sum(q * (2 if cfg.spsa_antithetic else 1) for q in queries) + (0 if cfg.spsa_antithetic else 1)
    logger.info("mini_llm gradient: %d units of up to %d gates, %d passes over %d calibration windows.",
                len(units), max(dims), passes, n)
    gen = torch.Generator().manual_seed(cfg.seed)
    base = None if cfg.spsa_antithetic else window_losses(model, ids, cfg.batch_size, gran)
    bar = tqdm(total=sum(queries), desc="mini_llm SPSA queries", leave=False, disable=not progress)
    grads, errs, measurements = [], [], 0
    for unit, dim, q in zip(units, dims, queries):
        def loss(values: torch.Tensor | None, unit=unit) -> torch.Tensor:
            if values is None:
                return window_losses(model, ids, cfg.batch_size, gran)
            return window_losses(model, ids, cfg.batch_size, gran,
                                 lambda s, e: _unit_gates(unit, values[s:e], layouts, gran))

        est = spsa_estimate(loss, dim, n, cfg.spsa_eps, q, gen, cfg.spsa_directions, cfg.spsa_per_window,
                            cfg.spsa_antithetic, base_loss=base, progress=lambda: bar.update(1))
        grads.append((unit, est.grad))
        errs.append((unit, est.stderr))
        measurements += est.measurements
    bar.close()
    info = {"passes": passes, "measurements": measurements, "units": len(units), "max_unit_gates": max(dims)}
    return _to_blocks(grads, layouts, gran), _to_blocks(errs, layouts, gran), info


def autograd_gate_gradient(model: nn.Module, ids: torch.Tensor, batch_size: int, layouts: list[BlockLayout],
                           gran: list[str]) -> list[BlockScores]:
    """Exact ``dL/dm`` of the mean calibration loss by backpropagation (the reference; weights stay frozen)."""
    gates = [(torch.ones(_size(lay, g, "heads"), requires_grad=True),
              torch.ones(lay.intermediate_size, requires_grad=True)) for lay, g in zip(layouts, gran)]
    device = next(model.parameters()).device
    n = len(ids)
    with requires_grad_only(model, []), torch.enable_grad():
        for s in range(0, n, batch_size):
            b = ids[s : s + batch_size].to(device)
            with gated(model, gates, gran):
                logits = model(input_ids=b, use_cache=False).logits
            labels = torch.cat([b[:, 1:], torch.full_like(b[:, :1], -100)], 1)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100,
                                   reduction="none").view(len(b), -1)[:, :-1].mean(1).sum() / n
            loss.backward()
    return [BlockScores(h.grad.detach().clone(), c.grad.detach().clone()) for h, c in gates]


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.double().flatten(), b.double().flatten(), dim=0))


@dataclass
class GradientAgreement:
    """Cosine between the forward-only gate-gradient estimate and the autograd gate gradient.

    ``cosine`` is over every gate of the model; ``cosine_heads`` / ``cosine_channels`` over one type;
    ``per_block`` the cosine inside each block (heads and channels together), which is what ranks groups.
    """

    cosine: float
    cosine_heads: float
    cosine_channels: float
    per_block: list[float]
    estimate_seconds: float
    autograd_seconds: float
    passes: int
    measurements: int
    extra: dict = field(default_factory=dict)


def gradient_agreement(model: nn.Module, tokenizer, cfg: StructuredPruningConfig | None = None,
                       progress: bool = True) -> GradientAgreement:
    """How well ``mini_llm``'s forward-only gradient matches backpropagation on ``cfg``'s calibration windows.

    Runs the same estimate the ``mini_llm`` criterion runs (same windows, seed and ``spsa_*`` settings), then the
    autograd gradient of the same mean loss w.r.t. the same gates (autograd only here, for the diagnostic).
    """
    cfg = cfg or StructuredPruningConfig()
    if tokenizer is None:
        raise ValueError("gradient_agreement calibrates on text and needs a tokenizer.")
    layouts = model_layouts(model)
    gran = [resolve_granularity(cfg.head_granularity, lay) for lay in layouts]
    ids = calibration_batches(tokenizer, cfg.calibration, cfg.n_samples, cfg.seqlen, cfg.seed)
    was_training = model.training
    model.eval()
    try:
        t0 = time.perf_counter()
        est, _, info = estimate_gate_gradient(model, ids, cfg, layouts, gran, progress=progress)
        t1 = time.perf_counter()
        ref = autograd_gate_gradient(model, ids, cfg.batch_size, layouts, gran)
        t2 = time.perf_counter()
    finally:
        model.train(was_training)

    def cat(scores: list[BlockScores], part: str) -> torch.Tensor:
        return torch.cat([getattr(s, part) for s in scores])

    flat = lambda s: torch.cat([cat(s, "heads"), cat(s, "channels")])  # noqa: E731
    per_block = [_cos(torch.cat([e.heads, e.channels]), torch.cat([r.heads, r.channels])) for e, r in zip(est, ref)]
    out = GradientAgreement(_cos(flat(est), flat(ref)), _cos(cat(est, "heads"), cat(ref, "heads")),
                            _cos(cat(est, "channels"), cat(ref, "channels")), per_block, t1 - t0, t2 - t1,
                            info["passes"], info["measurements"], info)
    if math.isnan(out.cosine):
        logger.warning("gradient_agreement: the autograd gate gradient is zero; the cosine is undefined.")
    return out
