"""Configuration of :class:`~hf_ext.alignment.ISARATrainer`."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any

from .retrieval import RETRIEVERS

TRAIN_ON = ("seeds+kept", "kept", "new", "new_only")


def default_sft_config():
    """Our SFT defaults: LoRA-sized learning rate, 2 epochs, no checkpoints, no gradient checkpointing, bf16 only
    where a CUDA device supports it, no external loggers."""
    import torch
    from trl import SFTConfig

    bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return SFTConfig(output_dir="isara_output/sft", learning_rate=2e-4, num_train_epochs=2,
                     per_device_train_batch_size=8, logging_steps=1, save_strategy="no", report_to="none",
                     max_length=256, gradient_checkpointing=False, bf16=bf16, seed=0, disable_tqdm=True)


def default_lora_config():
    """Our LoRA defaults: rank 8, alpha 16, every linear layer, no dropout (so runs reproduce bit for bit)."""
    from peft import LoraConfig

    return LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")


def _jsonable(x: Any) -> Any:
    if isinstance(x, enum.Enum):
        return x.value
    if isinstance(x, (set, frozenset)):
        return sorted(x)
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def _init_kwargs(cls, d: dict) -> dict:
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    return {k: v for k, v in d.items() if k in names}


@dataclass
class ISARAConfig:
    """Settings of ISARA self-alignment (Guo et al., 2024): retrieve, generate in context, filter, fine-tune, repeat.

    The paper publishes neither code nor its retriever, prompt template, in-context example count, filters or
    iteration count: every such field below says "our choice".

    Parameters that control the loop:

    Args:
        output_dir: folder of the report (``report.json``, ``report.png``) and of each iteration's kept samples.
        overwrite: replace what hf-ext wrote in a non-empty ``output_dir`` (other files are kept).
        iterations: self-alignment rounds (our choice: 3).
        samples_per_iteration: generations per round, before filtering (the paper's budget unit: 512).
        train_on: what each round fine-tunes on (the adapter carries over between rounds): ``"seeds+kept"`` the
            seeds plus every sample kept so far (our choice, the default); ``"kept"`` every kept sample, no seeds;
            ``"new"`` the seeds plus this round's samples in round 1, then only each round's new samples (every
            example seen once); ``"new_only"`` only each round's new samples, for a model already fine-tuned on the
            seeds (the CPU benchmark's warm start).
        seed: seed of generation and fine-tuning.

    Parameters that control retrieval:

    Args:
        icl_examples: labeled examples in each generation prompt, the k nearest to its passage (our choice: 4).
        retriever: ``"embedding"`` (all-MiniLM-L6-v2) or ``"bm25"`` (our choice: embedding).
        embedding_model: sentence-transformers model folder or id (None: the offline all-MiniLM-L6-v2).
        pool_min_quality: passages under this :func:`~hf_ext.alignment.retrieval.passage_quality` are never
            retrieved (our choice: 0.5).
        pool_prefilter: with the embedding retriever, BM25 keeps this many pool passages before embedding (our
            choice: 2000; None: embed the whole pool).

    Parameters that control generation:

    Args:
        temperature: sampling temperature (0: greedy) (our choice: 0.7).
        top_p: nucleus sampling mass (our choice: 0.9).
        max_new_tokens: tokens per generated sample (our choice: 48).
        generation_batch_size: prompts per ``generate`` call.
        max_prompt_tokens: longer prompts keep their end.

    Parameters that control filtering:

    Args:
        question_words: (min, max) words of a kept question (our choice: 3, 40).
        answer_words: (min, max) words of a kept answer (our choice: 3, 60).
        max_rouge: a question with ROUGE-L F1 above this against any kept question is a duplicate (Self-Instruct:
            0.7).
        min_quality: samples whose quality score (default: ROUGE-L precision of the answer against its passage)
            is lower are dropped (our choice: 0.2).
        require_question: drop samples whose question does not end with "?" (our choice: True).

    Parameters that control evaluation and fine-tuning:

    Args:
        eval_max_new_tokens: answer length when scoring the held-out set.
        eval_batch_size: held-out prompts per ``generate`` call.
        sft: the ``trl.SFTConfig`` of every round (its ``output_dir`` is replaced by ``output_dir/sft``).
        lora: the ``peft.LoraConfig`` (None: full fine-tuning). The adapter carries over from round to round.

    Defaults that differ from ``SFTConfig``'s: learning_rate 2e-4, num_train_epochs 2, gradient_checkpointing
    False, bf16 only on a bf16-capable GPU, save_strategy "no", report_to "none", max_length 256.
    """

    output_dir: str = field(default="isara_output", metadata={"help": "Report and samples folder."})
    overwrite: bool = field(default=False, metadata={"help": "Replace hf-ext's files in a non-empty output_dir."})
    iterations: int = field(default=3, metadata={"help": "Self-alignment rounds (our choice)."})
    samples_per_iteration: int = field(default=64, metadata={"help": "Generations per round before filtering."})
    train_on: str = field(default="seeds+kept", metadata={"help": "'seeds+kept', 'kept', 'new' or 'new_only' (ours)."})
    seed: int = field(default=0, metadata={"help": "Seed of generation and fine-tuning."})
    icl_examples: int = field(default=4, metadata={"help": "In-context examples per prompt (our choice)."})
    retriever: str = field(default="embedding", metadata={"help": "'embedding' or 'bm25' (our choice)."})
    embedding_model: str | None = field(default=None, metadata={"help": "sentence-transformers model."})
    pool_min_quality: float = field(default=0.5, metadata={"help": "Least passage quality retrieved (ours)."})
    pool_prefilter: int | None = field(default=2000, metadata={"help": "BM25 prefilter before embedding (ours)."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature, 0 = greedy (ours)."})
    top_p: float = field(default=0.9, metadata={"help": "Nucleus sampling mass (ours)."})
    max_new_tokens: int = field(default=48, metadata={"help": "Tokens per generated sample (ours)."})
    generation_batch_size: int = field(default=8, metadata={"help": "Prompts per generate call."})
    max_prompt_tokens: int = field(default=768, metadata={"help": "Longer prompts keep their end."})
    question_words: tuple[int, int] = field(default=(3, 40), metadata={"help": "Kept question words (ours)."})
    answer_words: tuple[int, int] = field(default=(3, 60), metadata={"help": "Kept answer words (ours)."})
    max_rouge: float = field(default=0.7, metadata={"help": "Duplicate ROUGE-L threshold (Self-Instruct)."})
    min_quality: float = field(default=0.2, metadata={"help": "Least sample quality kept (ours)."})
    require_question: bool = field(default=True, metadata={"help": "Questions must end with '?' (ours)."})
    eval_max_new_tokens: int = field(default=32, metadata={"help": "Answer tokens when scoring held-out."})
    eval_batch_size: int = field(default=16, metadata={"help": "Held-out prompts per generate call."})
    sft: Any = field(default_factory=default_sft_config, metadata={"help": "trl.SFTConfig of every round."})
    lora: Any = field(default_factory=default_lora_config, metadata={"help": "peft.LoraConfig; None: full FT."})

    def __post_init__(self) -> None:
        for name in ("iterations", "samples_per_iteration", "icl_examples", "max_new_tokens",
                     "generation_batch_size", "max_prompt_tokens", "eval_max_new_tokens", "eval_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if self.train_on not in TRAIN_ON:
            raise ValueError(f"train_on must be one of {TRAIN_ON}, got {self.train_on!r}.")
        if self.retriever not in RETRIEVERS:
            raise ValueError(f"retriever must be one of {RETRIEVERS}, got {self.retriever!r}.")
        if self.pool_prefilter is not None and (not isinstance(self.pool_prefilter, int) or self.pool_prefilter < 1):
            raise ValueError(f"pool_prefilter must be a positive integer or None, got {self.pool_prefilter!r}.")
        for name in ("pool_min_quality", "max_rouge", "min_quality"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}.")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature!r}.")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}.")
        for name in ("question_words", "answer_words"):
            bounds = tuple(getattr(self, name))
            if len(bounds) != 2 or not 0 <= bounds[0] <= bounds[1]:
                raise ValueError(f"{name} must be (min, max) with 0 <= min <= max, got {bounds!r}.")
            setattr(self, name, (int(bounds[0]), int(bounds[1])))
        from trl import SFTConfig

        if isinstance(self.sft, dict):
            self.sft = SFTConfig(**_init_kwargs(SFTConfig, self.sft))
        if not isinstance(self.sft, SFTConfig):
            raise ValueError(f"sft must be a trl.SFTConfig, got {type(self.sft).__name__}.")
        if self.lora is not None:
            from peft import LoraConfig

            if isinstance(self.lora, dict):
                self.lora = LoraConfig(**_init_kwargs(LoraConfig, self.lora))
            if not isinstance(self.lora, LoraConfig):
                raise ValueError(f"lora must be a peft.LoraConfig or None, got {type(self.lora).__name__}.")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields; ``sft`` and ``lora`` as their own dicts."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("sft", "lora")}
        out["question_words"], out["answer_words"] = list(self.question_words), list(self.answer_words)
        out["sft"] = _jsonable(self.sft.to_dict())
        out["lora"] = None if self.lora is None else _jsonable(self.lora.to_dict())
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ISARAConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"Unknown ISARAConfig keys: {sorted(unknown)}.")
        return cls(**d)
