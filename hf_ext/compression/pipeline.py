"""Glue: run allocation statistics and pruning block by block through ``common.capture.SequentialRunner``.

Two sequential passes at most: a statistics pass on the dense model (OWL, MRP and Hessian allocations need every
block's statistics before any block is pruned), then the pruning pass, where each block sees the outputs of the
already-compressed blocks before it (as SparseGPT and Wanda do). Only one block is on the execution device at a
time; calibration activations are the only other large state.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers.utils import logging

from ..common.arch import get_arch, is_skipped, named_block_linears, set_submodule
from ..common.capture import BlockOffload, BlockStep, InputStats, SequentialRunner, collect_inputs
from ..common.data import calibration_batches
from ..common.utils import peak_rss_mib
from .allocation import (
    BlockScores,
    hessian_allocation,
    mrp_allocation,
    owl_allocation,
    sample_block_scores,
    uniform_allocation,
)
from .alps import alps_prune
from .config import METRICS, CompressionConfig
from .layer import CompressedLinear, dtype_name, quantize_kept
from .metrics import importance, make_mask, outlier_ratio, row_prune_count
from .mrp_measured import MeasuredBlock
from .mrp_measured import metric_scores as _metric_scores
from .report import CompressionReport, LayerRow
from .sparsegpt import inverse_hessian_diag, obs_quantize, refit_on_mask, sparsegpt_prune

logger = logging.get_logger(__name__)

HESSIAN_METRICS = ("sparsegpt", "alps")  # metrics that prune against the layer Hessian


def _skipped(full_name: str, cfg: CompressionConfig) -> bool:
    return is_skipped(full_name, cfg.modules_to_not_convert)


def prunable(block_name: str, linears: dict[str, nn.Module], cfg: CompressionConfig) -> dict[str, nn.Linear]:
    return {n: m for n, m in linears.items() if isinstance(m, nn.Linear) and not _skipped(f"{block_name}.{n}", cfg)}


def check_shapes(model: nn.Module, cfg: CompressionConfig) -> None:
    """Fail before any work when a layer's input size does not fit the group size or the N:M pattern, the
    calibration windows are longer than the model's positions, or the Hessian allocation has nothing to allocate."""

    nm = cfg.nm
    text_config = getattr(model.config, "text_config", None) or model.config
    max_pos = getattr(text_config, "max_position_embeddings", None)
    if isinstance(max_pos, int) and cfg.seqlen > max_pos:
        raise ValueError(f"seqlen {cfg.seqlen} is above the model's max_position_embeddings ({max_pos}).")
    for name, mod in named_block_linears(model).items():
        if not isinstance(mod, nn.Linear) or _skipped(name, cfg):
            continue
        cols = mod.in_features
        if cfg.bits is not None and cfg.group_size is not None and cols % cfg.group_size:
            raise ValueError(f"group_size {cfg.group_size} does not divide the {cols} inputs of {name}.")
        if nm is not None and cols % nm[1]:
            raise ValueError(f"N:M structure {cfg.structure} needs the {cols} inputs of {name} to be a multiple "
                             f"of {nm[1]}.")
        if (cfg.allocation == "hessian" and cfg.block_sparsities is None and 0 < cfg.sparsity
                and row_prune_count(cols, cfg.sparsity) == 0):
            raise ValueError(f"sparsity={cfg.sparsity} prunes no weight of the {cols}-input rows of {name}, so the "
                             "Hessian allocation has nothing to allocate; use a larger sparsity or "
                             "allocation='uniform'.")


def metric_scores(weight: torch.Tensor, stats: InputStats, metric: str, hinv_diag: torch.Tensor | None
                  ) -> torch.Tensor:
    """Per-weight importance for allocation (see :func:`.mrp_measured.metric_scores`)."""
    return _metric_scores(weight, metric, stats.col_norm, hinv_diag)


def obs_block_loss(weights: list[torch.Tensor], hinv_diags: list[torch.Tensor], sparsity: float) -> float:
    """Estimated loss of pruning a block at ``sparsity``: per row, the sum of the smallest ``w^2 / [H^-1]_jj``."""
    total = 0.0
    for w, d in zip(weights, hinv_diags):
        sal = w.float() ** 2 / d[None, :]
        k = row_prune_count(w.shape[1], sparsity)
        if k:
            total += float(torch.topk(sal, k, dim=1, largest=False).values.sum(dtype=torch.float64))
    return total


@dataclass
class AllocationStats:
    """Dense-model statistics the allocations need, from one sequential pass (reusable across settings).

    ``owl``: OWL outlier ratio per block (Wanda scores, threshold ``owl_m``); ``mrp[metric]``: sampled scores per
    block (simulated MRP); ``mrp_measured[metric]``: each block's weights and input statistics (measured MRP);
    ``hessian[s]``: estimated OBS loss per block at sparsity ``s``; ``sizes``: prunable weights per block.
    """

    sizes: list[float] = field(default_factory=list)
    owl_m: float = 5.0
    owl: list[float] = field(default_factory=list)
    mrp: dict[str, list[BlockScores]] = field(default_factory=dict)
    mrp_measured: dict[str, list[MeasuredBlock]] = field(default_factory=dict)
    hessian: dict[float, list[float]] = field(default_factory=dict)
    seconds: float = 0.0


@torch.no_grad()
def collect_allocation_stats(model: nn.Module, ids: torch.Tensor, cfg: CompressionConfig, owl: bool = True,
                             mrp_metrics: tuple[str, ...] = (), hessian_sparsities: tuple[float, ...] = (),
                             offload: BlockOffload | None = None, mrp_modes: tuple[str, ...] | None = None
                             ) -> AllocationStats:
    """One sequential pass over the dense model collecting what the requested allocations need.

    ``mrp_modes`` (default: ``(cfg.mrp_mode,)``) says which MRP statistics to keep for ``mrp_metrics``. The sampled
    scores of block ``b`` and metric ``m`` use a generator seeded from ``(cfg.seed, b, m)`` alone, so an allocation
    does not depend on what else the pass collects (two runs with one seed give the same sparsities).
    """
    start = time.perf_counter()
    modes = (cfg.mrp_mode,) if mrp_modes is None else tuple(mrp_modes)
    simulated = mrp_metrics if "simulated" in modes else ()
    measured = mrp_metrics if "measured" in modes else ()
    gram = bool(hessian_sparsities) or "sparsegpt" in simulated or any(m in HESSIAN_METRICS for m in measured)
    out = AllocationStats(owl_m=cfg.owl_m, mrp={m: [] for m in simulated},
                          mrp_measured={m: [] for m in measured}, hessian={float(s): [] for s in hessian_sparsities})
    runner = SequentialRunner(model, ids, batch_size=cfg.batch_size, desc="allocation statistics", offload=offload)
    for step in runner:
        linears = prunable(step.name, step.linears, cfg)
        with collect_inputs(linears, gram=gram) as stats:
            outputs = step.run()
        names = list(linears)
        weights = [linears[n].weight for n in names]
        out.sizes.append(float(sum(w.numel() for w in weights)))
        if owl:  # OWL's outlier distribution always uses Wanda scores
            scores = torch.cat([importance(w, "wanda", stats[n].col_norm).reshape(-1) for n, w in zip(names, weights)])
            out.owl.append(outlier_ratio(scores, cfg.owl_m))
            del scores
        # one inverse per linear, shared by the MRP sparsegpt scores and every Hessian-allocation sparsity
        hinv = [inverse_hessian_diag(stats[n].hessian, cfg.dampening) for n in names] if gram else [None] * len(names)
        for metric in simulated:
            scores = [metric_scores(w, stats[n], metric, d) for n, w, d in zip(names, weights, hinv)]
            gen = torch.Generator().manual_seed(_sample_seed(cfg.seed, step.index, metric))
            out.mrp[metric].append(sample_block_scores(scores, cfg.mrp_sample_size, gen))
        for metric in measured:
            hessians = [stats[n].hessian if metric in HESSIAN_METRICS else None for n in names]
            out.mrp_measured[metric].append(MeasuredBlock(weights, [stats[n].col_norm for n in names], hessians,
                                                          metric, cfg.dampening, cfg.blocksize))
        for s in out.hessian:
            out.hessian[s].append(obs_block_loss(weights, hinv, s))
        del stats
        step.advance(outputs)  # the block is unchanged: its outputs are the next block's inputs
    out.seconds = time.perf_counter() - start
    return out


def _sample_seed(seed: int, block: int, metric: str) -> int:
    return (int(seed) * 1_000_003 + block * 1009 + METRICS.index(metric)) % 2**63


def allocation_from_stats(stats: AllocationStats, cfg: CompressionConfig) -> tuple[list[float], list[str]]:
    """Per-block sparsities for ``cfg.allocation`` from collected statistics (and notes for the report)."""
    if cfg.allocation == "owl":
        if not stats.owl or stats.owl_m != cfg.owl_m:
            raise ValueError(f"The statistics hold no OWL ratios for owl_m={cfg.owl_m}.")
        notes = ["OWL outlier ratios (Wanda scores): " + ", ".join(f"{d:.4f}" for d in stats.owl)]
        return owl_allocation(stats.owl, stats.sizes, cfg.sparsity, cfg.owl_lambda), notes
    if cfg.allocation == "mrp":
        source = stats.mrp if cfg.mrp_mode == "simulated" else stats.mrp_measured
        if cfg.metric not in source:
            raise ValueError(f"The statistics hold no {cfg.mrp_mode} MRP data for metric {cfg.metric!r}.")
        alloc, trace = mrp_allocation(source[cfg.metric], cfg.sparsity, cfg.owl_m, cfg.mrp_step,
                                      cfg.mrp_tolerance, cfg.mrp_max_sparsity)
        notes = [f"MRP {cfg.mrp_mode} ({cfg.metric} scores): {trace.steps} steps; final non-outlier ratios: "
                 + ", ".join(f"{r:.4f}" for r in trace.final_non_outlier)]
        return alloc, notes
    if cfg.allocation == "hessian":
        errors = stats.hessian.get(float(cfg.sparsity))
        if errors is None:
            raise ValueError(f"The statistics hold no Hessian loss estimates at sparsity {cfg.sparsity}.")
        empty = [i for i, e in enumerate(errors) if e <= 0]
        if empty:
            raise ValueError(f"sparsity={cfg.sparsity} prunes no weight of blocks {empty}, so the Hessian allocation "
                             "has nothing to allocate; use a larger sparsity or allocation='uniform'.")
        alloc, levels = hessian_allocation(errors, stats.sizes, cfg.sparsity, cfg.hessian_levels, cfg.hessian_spread)
        notes = ["Hessian estimated losses: " + ", ".join(f"{e:.3g}" for e in errors),
                 "Hessian levels (0 = lowest loss): " + ", ".join(map(str, levels))]
        return alloc, notes
    return uniform_allocation(len(stats.sizes), cfg.sparsity), []


def allocate(model: nn.Module, ids: torch.Tensor, cfg: CompressionConfig, offload: BlockOffload | None = None
             ) -> tuple[list[float], list[str]]:
    """Per-block sparsities for ``cfg``: given ones (``cfg.block_sparsities``), uniform, or from a statistics pass."""
    n_blocks = len(model.get_submodule(get_arch(model).blocks))
    if cfg.block_sparsities is not None:
        if len(cfg.block_sparsities) != n_blocks:
            raise ValueError(f"block_sparsities has {len(cfg.block_sparsities)} entries for {n_blocks} blocks.")
        if any(not 0 <= s < 1 for s in cfg.block_sparsities):
            raise ValueError(f"block_sparsities must lie in [0, 1), got {cfg.block_sparsities}.")
        return [float(s) for s in cfg.block_sparsities], [f"Allocation given in the config ({cfg.allocation})."]
    if cfg.allocation == "uniform" or cfg.sparsity == 0:
        return uniform_allocation(n_blocks, cfg.sparsity), []
    stats = collect_allocation_stats(
        model, ids, cfg, owl=cfg.allocation == "owl", mrp_metrics=(cfg.metric,) if cfg.allocation == "mrp" else (),
        hessian_sparsities=(cfg.sparsity,) if cfg.allocation == "hessian" else (), offload=offload,
    )
    return allocation_from_stats(stats, cfg)


def compress_linear(linear: nn.Linear, stats: InputStats, sparsity: float, cfg: CompressionConfig) -> CompressedLinear:
    """Prune (refit) (and quantize) one linear into a :class:`CompressedLinear`.

    SparseGPT prunes and quantizes in its own sweeps (see :mod:`.sparsegpt`). For magnitude / Wanda the mask is the
    metric's; with ``refit_iters`` the kept weights are refit on it against the layer Hessian and then, with bits,
    quantized by a GPTQ-style sweep on the same mask (without refit, plain rounding: the metric has no Hessian).
    """
    nm = cfg.nm
    if cfg.metric == "sparsegpt":
        new_w, keep, scale, zero = sparsegpt_prune(linear.weight, stats.hessian, sparsity, nm, cfg.bits,
                                                   cfg.group_size, cfg.blocksize, cfg.dampening, cfg.refit_iters)
    elif cfg.metric == "alps":
        new_w, keep = alps_prune(linear.weight, stats.hessian, sparsity, nm, cfg.dampening,
                                 cg_iters=cfg.refit_iters or 10)
        scale = zero = None
        if cfg.bits is not None:
            new_w, keep, scale, zero = obs_quantize(new_w, stats.hessian, keep, cfg.bits, cfg.group_size,
                                                    cfg.blocksize, cfg.dampening)
    else:
        keep = make_mask(importance(linear.weight, cfg.metric, stats.col_norm), sparsity, nm)
        new_w = torch.where(keep, linear.weight.detach().float(), torch.zeros((), dtype=torch.float32))
        scale = zero = None
        if cfg.refit_iters:
            new_w = refit_on_mask(linear.weight, stats.hessian, keep, cfg.refit_iters, cfg.dampening, start=new_w)
            if cfg.bits is not None:
                new_w, keep, scale, zero = obs_quantize(new_w, stats.hessian, keep, cfg.bits, cfg.group_size,
                                                        cfg.blocksize, cfg.dampening)
        elif cfg.bits is not None:
            new_w, scale, zero = quantize_kept(new_w, keep, cfg.bits, cfg.group_size)
    return CompressedLinear.from_linear(linear, keep, new_w, cfg.bits, cfg.group_size, scale, zero,
                                        resident=cfg.resident)


@torch.no_grad()
def compress_model(model: nn.Module, tokenizer, cfg: CompressionConfig, offload: BlockOffload | None = None,
                   on_block_done: Callable[[BlockStep], None] | None = None) -> CompressionReport:
    """Calibrate, allocate, prune and pack ``model`` in place; writes the reload fields into ``cfg``.

    Args:
        model: The float model.
        tokenizer: Its tokenizer (calibration text).
        cfg: The settings.
        offload: Where blocks come from (default: they are in memory; see ``common.offload.DiskOffload``).
        on_block_done: Called with each compressed block before it is put away (the from-disk path saves it).
    """
    start = time.perf_counter()
    arch = get_arch(model)  # unsupported families fail here, before calibration data is built
    if cfg.compressed_layers:
        raise ValueError("This CompressionConfig was already used (compressed_layers is set); pass a fresh one.")
    check_shapes(model, cfg)
    if tokenizer is None:
        raise ValueError("Compression calibrates on text and needs the model's tokenizer.")
    ids = calibration_batches(tokenizer, cfg.calibration, cfg.n_samples, cfg.seqlen, cfg.seed)
    was_training = model.training
    model.eval()
    block_targets, notes = allocate(model, ids, cfg, offload)
    report = CompressionReport(settings=cfg.describe(), allocation=cfg.allocation, block_targets=block_targets,
                               notes=notes)
    layers: dict[str, int] = {}
    checksums: dict[str, dict[str, str]] = {}
    dtype = None
    runner = SequentialRunner(model, ids, batch_size=cfg.batch_size, desc=f"{cfg.metric} pruning", offload=offload)
    for step in runner:
        linears = prunable(step.name, step.linears, cfg)
        target = block_targets[step.index]
        with collect_inputs(linears, gram=cfg.metric in HESSIAN_METRICS or cfg.refit_iters > 0) as stats:
            step.run()
        for name, linear in linears.items():
            dtype = dtype or linear.weight.dtype
            new = compress_linear(linear, stats[name], target, cfg)
            set_submodule(step.block, name, new)
            full = f"{step.name}.{name}"
            layers[full] = new.nnz
            checksums[full] = new.digests()
            report.layers.append(LayerRow(full, step.index, target, new.sparsity, new.nnz,
                                          new.in_features * new.out_features, new.packed_bytes(),
                                          new.resident_bytes()))
        del stats
        step.advance()
        if on_block_done is not None:
            on_block_done(step)
    model.train(was_training)
    if not layers:
        raise ValueError(f"No linear was compressed (modules_to_not_convert={cfg.modules_to_not_convert}).")
    cfg.block_sparsities = [round(s, 6) for s in block_targets]
    cfg.compressed_layers = layers
    cfg.checksums = checksums
    cfg.achieved_sparsity = round(report.achieved_sparsity, 6)
    cfg.compute_dtype = dtype_name(dtype)
    cfg.base_model = cfg.base_model or (str(getattr(model, "name_or_path", "")) or None)
    report.seconds = time.perf_counter() - start
    report.peak_rss_mib = peak_rss_mib()
    logger.info("Compressed %d linears of %s to global sparsity %.4f in %.1f s", len(layers), arch.family,
                report.achieved_sparsity, report.seconds)
    return report
