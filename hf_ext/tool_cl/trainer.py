"""The continual trainer: sequential fine-tuning over a Tool-CL task sequence with ``transformers.Trainer`` and
PEFT LoRA, a replay buffer, and the accuracy matrix filled after every task.

Protocol (our choices where the paper is silent, each stated): the untrained model (LoRA attached, so identical
to the base model) is evaluated on every task first: that row is the FWT baseline ``b``. Then for each task ``i``
a fresh ``Trainer`` (fresh optimizer and schedule, the same ``TrainingArguments``) trains on task ``i``'s training
set plus the whole replay buffer, the model is evaluated on every task's test set (``R[i][j]``, greedy generation,
executor in the tool-use form, exact match), and task ``i``'s training examples are offered to the buffer. Loss is
on the completion tokens only (the prompt is masked with -100, and the LM head runs only where it is needed: see
:func:`completion_loss`); each completion ends with EOS so generation stops.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field

from transformers.utils import logging

from .benchmark import ToolCLBenchmark
from .evaluation import TaskScore, evaluate_tasks
from .executor import ExecutorConfig
from .metrics import continual_metrics
from .replay import ReplayBuffer, ReplayConfig

logger = logging.get_logger(__name__)


def default_lora_config():
    """LoRA r=8, alpha=16, dropout 0, on every linear layer but the head (our default)."""
    from peft import LoraConfig

    return LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")


def default_training_args(output_dir: str | None = None, seed: int = 0, progress: bool = False):
    """``TrainingArguments`` used when none are given: 2 epochs, batch 8, LR 2e-4, no checkpoints, no reporting."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=output_dir or tempfile.mkdtemp(prefix="tool_cl_"), num_train_epochs=2,
        per_device_train_batch_size=8, learning_rate=2e-4, lr_scheduler_type="constant", warmup_steps=0,
        logging_steps=10, save_strategy="no", report_to="none", seed=seed, disable_tqdm=not progress,
    )


def completion_loss(model, inputs: dict):
    """Mean next-token cross-entropy over the labelled (completion) tokens, running the LM head only at the
    positions whose next token is labelled in some row of the batch (``logits_to_keep``): with a 262k-token
    vocabulary the head dominates a small model's step, and the prompt positions never need it. Same value as the
    model's own loss on these labels."""
    import torch.nn.functional as F

    labels = inputs["labels"]
    shifted = labels[:, 1:]
    keep = (shifted != -100).any(0).nonzero().squeeze(1)
    rest = {k: v for k, v in inputs.items() if k != "labels"}
    out = model(**rest, logits_to_keep=keep)
    target = shifted[:, keep]
    return F.cross_entropy(out.logits.float().reshape(-1, out.logits.shape[-1]), target.reshape(-1),
                           ignore_index=-100)


def _completion_trainer_class():
    from transformers import Trainer

    class CompletionOnlyTrainer(Trainer):
        """``Trainer`` whose loss is :func:`completion_loss` (mean over this batch's completion tokens)."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = completion_loss(model, inputs)
            return (loss, None) if return_outputs else loss

    return CompletionOnlyTrainer


@dataclass
class ContinualResult:
    """What :meth:`ContinualTrainer.run` returns.

    Attributes:
        matrix: ``R[i][j]``, accuracy on task ``j`` after training task ``i``.
        baseline: accuracy of the untrained model on each task (FWT baseline).
        metrics: :func:`hf_ext.tool_cl.metrics.continual_metrics` of the two.
        answers: ``answers[i][j]`` the final answers on task ``j`` after stage ``i`` (``stage_predictions``).
        train_loss: mean training loss of each stage.
        seconds: wall time of each stage (training + evaluation).
        tool_errors: ``tool_errors[i][j]`` failed tool calls (tool-use form only; 0 otherwise).
    """

    matrix: list[list[float]]
    baseline: list[float]
    metrics: dict
    answers: list[list[list[str]]] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    tool_errors: list[list[int]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("matrix", "baseline", "metrics", "train_loss", "seconds",
                                               "tool_errors")}


class ContinualTrainer:
    """Sequential fine-tuning over ``bench`` with replay; :meth:`run` fills the accuracy matrix.

    Args:
        model: a causal LM.
        tokenizer: its tokenizer (a pad token is set to EOS if missing).
        bench: the task sequence.
        replay: the replay buffer settings (``None`` = no replay).
        args: ``TrainingArguments`` for every stage (default: :func:`default_training_args`).
        lora: a PEFT ``LoraConfig``; ``None`` = :func:`default_lora_config`; ``False`` = full fine-tuning.
        tool_use: train and score the tool-use form (``True``) or the no-tool form.
        eval_batch_size: prompts per ``generate`` call (every task's test prompts share the batches).
        max_new_tokens: generation length; ``None`` = the longest tokenized completion of the form plus EOS.
        executor_config: the executor's limits.
        progress: show a progress bar over the stages.
    """

    def __init__(self, model, tokenizer, bench: ToolCLBenchmark, replay: ReplayConfig | None = None, args=None,
                 lora=None, tool_use: bool = True, eval_batch_size: int = 64, max_new_tokens: int | None = None,
                 executor_config: ExecutorConfig | None = None, progress: bool = True):
        if not isinstance(bench, ToolCLBenchmark):
            raise ValueError(f"bench must be a ToolCLBenchmark, got {type(bench).__name__}.")
        if replay is not None and not isinstance(replay, ReplayConfig):
            raise ValueError(f"replay must be a ReplayConfig or None, got {type(replay).__name__}.")
        if eval_batch_size < 1:
            raise ValueError(f"eval_batch_size must be >= 1, got {eval_batch_size}.")
        if max_new_tokens is not None and max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1 or None, got {max_new_tokens}.")
        self.tokenizer = tokenizer
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no EOS token: completions must end with one for generation to stop.")
        self.bench = bench
        self.replay_config = replay or ReplayConfig(size=0, strategy="none")
        self.buffer = ReplayBuffer(self.replay_config)
        self.args = args if args is not None else default_training_args(progress=False)
        self.tool_use = bool(tool_use)
        self.eval_batch_size = eval_batch_size
        self.executor_config = executor_config
        self.progress = progress
        self.column = "tool_completion" if self.tool_use else "direct_completion"
        if lora is False:
            self.model = model
        else:
            from peft import get_peft_model

            self.model = get_peft_model(model, lora if lora is not None else default_lora_config())
        self.max_new_tokens = max_new_tokens or self._longest_completion() + 1

    # ------------------------------------------------------------------------------------------------ data

    def _completion_ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]

    def _longest_completion(self) -> int:
        return max(len(self._completion_ids(r[self.column])) - 1
                   for j in range(len(self.bench)) for r in self.bench.examples(j, "test"))

    def tokenize(self, rows: list[dict]):
        """Rows -> a ``datasets.Dataset`` of ``input_ids`` / ``attention_mask`` / ``labels`` (prompt masked)."""
        from datasets import Dataset

        feats = {"input_ids": [], "attention_mask": [], "labels": []}
        for r in rows:
            p = self.tokenizer(r["prompt"])["input_ids"]
            c = self._completion_ids(r[self.column])
            feats["input_ids"].append(p + c)
            feats["attention_mask"].append([1] * (len(p) + len(c)))
            feats["labels"].append([-100] * len(p) + c)
        return Dataset.from_dict(feats)

    # ------------------------------------------------------------------------------------------- the stages

    def evaluate_all(self) -> list[TaskScore]:
        """Scores of the current model on every task's test set."""
        tasks = [(self.bench.examples(j, "test"), self.bench.tools(j)) for j in range(len(self.bench))]
        return evaluate_tasks(self.model, self.tokenizer, tasks, self.tool_use, self.max_new_tokens,
                              self.eval_batch_size, self.executor_config)

    def train_task(self, task_id: int) -> float:
        """Fine-tune on task ``task_id`` plus the replay buffer; returns the mean training loss."""
        from transformers import DataCollatorForSeq2Seq

        rows = self.bench.examples(task_id, "train") + self.buffer.examples()
        collator = DataCollatorForSeq2Seq(self.tokenizer, padding=True, label_pad_token_id=-100)
        side = self.tokenizer.padding_side
        self.tokenizer.padding_side = "right"
        try:
            trainer = _completion_trainer_class()(model=self.model, args=self.args,
                                                  train_dataset=self.tokenize(rows), data_collator=collator)
            if not self.progress:
                from transformers.trainer_callback import PrinterCallback

                trainer.remove_callback(PrinterCallback)  # with disable_tqdm, Trainer prints every log dict
            out = trainer.train()
        finally:
            self.tokenizer.padding_side = side
        self.buffer.add(self.bench.examples(task_id, "train"))
        return float(out.training_loss)

    def run(self, baseline: list[float] | None = None) -> ContinualResult:
        """Evaluate the untrained model (unless ``baseline`` is given), then train and evaluate task by task."""
        from tqdm.auto import tqdm

        t0 = time.perf_counter()
        base = baseline if baseline is not None else [s.accuracy for s in self.evaluate_all()]
        logger.info("untrained row: %s (%.0f s)", base, time.perf_counter() - t0)
        result = ContinualResult(matrix=[], baseline=list(base), metrics={})
        for i in tqdm(range(len(self.bench)), desc="tool_cl stages", disable=not self.progress):
            t = time.perf_counter()
            result.train_loss.append(self.train_task(i))
            scores = self.evaluate_all()
            result.matrix.append([s.accuracy for s in scores])
            result.answers.append([s.answers for s in scores])
            result.tool_errors.append([s.errors for s in scores])
            result.seconds.append(time.perf_counter() - t)
            logger.info("stage %d: loss %.3f, row %s", i, result.train_loss[-1], result.matrix[-1])
        result.metrics = continual_metrics(result.matrix, result.baseline)
        return result
