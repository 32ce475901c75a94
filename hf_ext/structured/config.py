"""Configuration of MINI-LLM-style structured pruning (``quant_method="hf_ext_structured"``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

from ..common.quantizer import HfExtQuantizationConfig

CRITERIA = ("mini_llm", "magnitude", "activation", "taylor")
HEAD_GRANULARITIES = ("auto", "kv_group", "query")
SPSA_SCOPES = ("type", "block", "model")
SPSA_DIRECTIONS = ("orthogonal", "rademacher")


@dataclass
class StructuredPruningConfig(HfExtQuantizationConfig):
    """Remove attention heads and MLP channels so that the model is physically smaller.

    Pass it to ``AutoModelForCausalLM.from_pretrained(..., quantization_config=cfg)`` or to
    :func:`hf_ext.prune_structured`. After pruning, ``layer_shapes`` records the kept head and channel counts of
    every block; it is saved in ``config.json`` so ``from_pretrained(saved_dir)`` rebuilds the smaller skeleton.

    Args:
        ratio: Fraction of the prunable parameters (every parameter of the attention and MLP projections of every
            block, protected blocks included) to remove, in (0, 1).
        criterion: Group importance: ``mini_llm`` (feature-map sensitivity with a forward-only SPSA gradient),
            ``magnitude``, ``activation`` or ``taylor`` (backpropagated gradient, the LLM-Pruner-style baseline).
        head_granularity: ``kv_group`` removes a key/value head together with its query heads; ``query`` removes
            query heads only, the same number from every key/value group (the only option when a model has one
            key/value head, like Gemma 3 270M); ``auto`` picks ``kv_group`` when there are several key/value heads.
        calibration: Text source for :func:`hf_ext.calibration_batches` (``pydocs``, a path, ``wikitext2``, ...).
        n_samples: Calibration windows.
        seqlen: Tokens per calibration window.
        batch_size: Windows per forward while scoring.
        seed: Seed of the calibration windows and of the SPSA perturbations.
        spsa_eps: SPSA perturbation size of the group gates (our choice: gates sit at 1, so 0.01 scales a
            feature map by about +-1 %).
        spsa_scope: Which gates one SPSA estimate covers (our choice: ``type``, a block's heads, then its MLP
            channels, so the heads' large gradients do not drown the channels' and each estimate covers at most a
            few thousand gates; measured on a tiny Llama, cosine with autograd 0.96 vs 0.63 for ``block``, a
            block's heads and channels together, at the same number of passes); ``model``, every gate at once, is
            the first release's estimate, kept for comparison: the same accuracy needs as many measurements as the
            model has gates).
        spsa_queries: Perturbed evaluations per estimate unit, each two passes over the calibration data (one when
            not antithetic). ``None`` (default) takes ``max(4, ceil(unit gates / n_samples))`` queries per unit,
            one full run of orthogonal directions (at least 4 for a block's few heads): about
            ``2 * total gates / n_samples`` passes in all (on Gemma 3 270M with 32 windows about 2,400 passes:
            minutes on a GPU, hours on a CPU). Fewer queries trade the gradient's accuracy for time
            (:func:`hf_ext.structured.gradient_agreement` measures it).
        spsa_directions: ``orthogonal`` (our choice: runs of mutually orthogonal directions, the rows of a random
            rotation, lower error than independent directions for the same number) or ``rademacher``.
        spsa_per_window: Every calibration window carries its own direction (our choice: one query then gives
            ``n_samples`` measurements; this is the averaging over calibration batches); ``False`` shares one
            direction over all windows.
        spsa_antithetic: Central differences ``L(1 + eps z) - L(1 - eps z)`` (our choice: the unperturbed loss and
            the second-order term cancel); ``False``: one-sided differences against the unperturbed loss.
        gradient_weight: Weight lambda of the gradient term in the ``mini_llm`` score (0 gives ``activation``).
        spsa_threshold: The SPSA gradient is soft-thresholded at this many of its own standard errors (per gate,
            from the spread of its measurements) before it enters the ``mini_llm`` score (our choice: 1; 0 uses
            the raw estimate).
        protect_first: Leading blocks left unpruned.
        protect_last: Trailing blocks left unpruned.
        recovery_steps: LoRA recovery steps after pruning (0 = no recovery).
        recovery_rank: LoRA rank.
        recovery_lr: LoRA learning rate (a finite number > 0).
        recovery_samples: Calibration windows used for recovery (drawn with ``seed + 1``).
        recovery_batch_size: Windows per recovery step.
        tokenizer: Tokenizer path for the ``from_pretrained`` path when the checkpoint has none (not saved).
        layer_shapes: Written after pruning: per block ``{"num_heads", "num_kv_heads", "intermediate_size"}``.
        achieved_ratio: Written after pruning: the fraction of prunable parameters actually removed.
    """

    quant_method: ClassVar[str] = "hf_ext_structured"

    ratio: float = field(default=0.2, metadata={"help": "fraction of prunable parameters removed, in (0, 1)"})
    criterion: str = field(default="mini_llm", metadata={"help": f"group importance, one of {CRITERIA}"})
    head_granularity: str = field(default="auto", metadata={"help": f"one of {HEAD_GRANULARITIES}"})
    calibration: str = field(default="pydocs", metadata={"help": "calibration text source"})
    n_samples: int = field(default=32, metadata={"help": "calibration windows"})
    seqlen: int = field(default=128, metadata={"help": "tokens per calibration window"})
    batch_size: int = field(default=2, metadata={"help": "windows per scoring forward"})
    seed: int = field(default=0, metadata={"help": "seed of calibration windows and SPSA directions"})
    spsa_eps: float = field(default=0.01, metadata={"help": "SPSA gate perturbation size"})
    spsa_scope: str = field(default="type", metadata={"help": f"gates per SPSA estimate, one of {SPSA_SCOPES}"})
    spsa_queries: int | None = field(
        default=None, metadata={"help": "SPSA queries per estimate unit (None: one orthogonal run, see docstring)"})
    spsa_directions: str = field(default="orthogonal", metadata={"help": f"one of {SPSA_DIRECTIONS}"})
    spsa_per_window: bool = field(default=True, metadata={"help": "every calibration window its own direction"})
    spsa_antithetic: bool = field(default=True, metadata={"help": "central (antithetic) differences"})
    gradient_weight: float = field(default=1.0, metadata={"help": "lambda of the gradient term of mini_llm"})
    spsa_threshold: float = field(default=1.0, metadata={"help": "soft threshold of the SPSA gradient, in std errors"})
    protect_first: int = field(default=0, metadata={"help": "leading blocks left unpruned"})
    protect_last: int = field(default=0, metadata={"help": "trailing blocks left unpruned"})
    recovery_steps: int = field(default=0, metadata={"help": "LoRA recovery steps (0: none)"})
    recovery_rank: int = field(default=8, metadata={"help": "LoRA rank for recovery"})
    recovery_lr: float = field(default=5e-4, metadata={"help": "LoRA learning rate"})
    recovery_samples: int = field(default=64, metadata={"help": "calibration windows for recovery"})
    recovery_batch_size: int = field(default=2, metadata={"help": "windows per recovery step"})
    tokenizer: str | None = field(default=None, metadata={"help": "tokenizer path", "serialize": False})
    layer_shapes: list[dict[str, int]] | None = field(
        default=None, metadata={"help": "per-block kept shapes, written after pruning"}
    )
    achieved_ratio: float | None = field(default=None, metadata={"help": "removed fraction, written after pruning"})

    def validate(self) -> None:
        if not isinstance(self.ratio, (int, float)) or not 0.0 < float(self.ratio) < 1.0:
            raise ValueError(f"ratio must be in (0, 1) (fraction of prunable parameters removed), got {self.ratio!r}.")
        if self.criterion not in CRITERIA:
            raise ValueError(f"criterion must be one of {CRITERIA}, got {self.criterion!r}.")
        if self.head_granularity not in HEAD_GRANULARITIES:
            raise ValueError(f"head_granularity must be one of {HEAD_GRANULARITIES}, got {self.head_granularity!r}.")
        self.check_positive_ints("n_samples", "seqlen", "batch_size", "recovery_rank", "recovery_samples",
                                 "recovery_batch_size")
        if self.spsa_queries is not None:
            self.check_positive_ints("spsa_queries")
        if self.spsa_scope not in SPSA_SCOPES:
            raise ValueError(f"spsa_scope must be one of {SPSA_SCOPES}, got {self.spsa_scope!r}.")
        if self.spsa_directions not in SPSA_DIRECTIONS:
            raise ValueError(f"spsa_directions must be one of {SPSA_DIRECTIONS}, got {self.spsa_directions!r}.")
        for name in ("spsa_per_window", "spsa_antithetic"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}.")
        self.check_non_negative("protect_first", "protect_last", "recovery_steps", integer=True)
        self.check_non_negative("spsa_threshold", "gradient_weight")
        for name in ("spsa_eps", "recovery_lr"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value <= 0:
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}.")
        if self.layer_shapes is not None:
            for i, shape in enumerate(self.layer_shapes):
                missing = {"num_heads", "num_kv_heads", "intermediate_size"} - set(shape)
                if missing:
                    raise ValueError(f"layer_shapes[{i}] lacks {sorted(missing)}: {shape!r}.")

    @property
    def is_pruned(self) -> bool:
        return self.layer_shapes is not None

