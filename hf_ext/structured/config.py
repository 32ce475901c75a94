"""Configuration of MINI-LLM-style structured pruning (``quant_method="hf_ext_structured"``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ..common.quantizer import HfExtQuantizationConfig

CRITERIA = ("mini_llm", "magnitude", "activation", "taylor")
HEAD_GRANULARITIES = ("auto", "kv_group", "query")


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
            feature map by +-1 %).
        spsa_queries: SPSA queries averaged (each costs two forward passes over the calibration data).
        gradient_weight: Weight lambda of the gradient term in the ``mini_llm`` score (0 gives ``activation``).
        spsa_threshold: The SPSA gradient is soft-thresholded at this many standard errors before it enters the
            ``mini_llm`` score (our choice: 2; 0 uses the raw estimate).
        protect_first: Leading blocks left unpruned.
        protect_last: Trailing blocks left unpruned.
        recovery_steps: LoRA recovery steps after pruning (0 = no recovery).
        recovery_rank: LoRA rank.
        recovery_lr: LoRA learning rate.
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
    spsa_queries: int = field(default=8, metadata={"help": "SPSA queries averaged (2 forwards each)"})
    gradient_weight: float = field(default=1.0, metadata={"help": "lambda of the gradient term of mini_llm"})
    spsa_threshold: float = field(default=2.0, metadata={"help": "soft threshold of the SPSA gradient, in std errors"})
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
        self.check_positive_ints("n_samples", "seqlen", "batch_size", "spsa_queries", "recovery_rank",
                                 "recovery_samples", "recovery_batch_size")
        self.check_non_negative("protect_first", "protect_last", "recovery_steps", integer=True)
        self.check_non_negative("spsa_threshold", "gradient_weight")
        if not self.spsa_eps > 0:
            raise ValueError(f"spsa_eps must be > 0, got {self.spsa_eps!r}.")
        if not self.recovery_lr > 0:
            raise ValueError(f"recovery_lr must be > 0, got {self.recovery_lr!r}.")
        if self.layer_shapes is not None:
            for i, shape in enumerate(self.layer_shapes):
                missing = {"num_heads", "num_kv_heads", "intermediate_size"} - set(shape)
                if missing:
                    raise ValueError(f"layer_shapes[{i}] lacks {sorted(missing)}: {shape!r}.")

    @property
    def is_pruned(self) -> bool:
        return self.layer_shapes is not None

