"""Score a model on one Tool-CL task: greedy generation, then the executor (tool-use form) and exact match.

Tool-use form: the generated text must hold a call (``<tool>...</tool>``) that the task's own executor runs; the
call's result is the answer. A malformed call, a tool missing from that task's environment (a name from a later
task, say), a wrong arity or an error counts as wrong. No-tool form: the answer is the generated text up to the
first newline. Both are compared with the reference by exact match after stripping whitespace.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..common.generation import batched_generate
from .executor import ExecutorConfig, ToolExecutor
from .metrics import normalize_answer
from .tools import Tool


@dataclass
class TaskScore:
    """Accuracy on one task, with the raw generations and the final answers (for reports and the metric)."""

    accuracy: float
    answers: list[str] = field(default_factory=list)
    generations: list[str] = field(default_factory=list)
    errors: int = 0


def score_generations(generations: list[str], rows: list[dict], tools: dict[str, Tool], tool_use: bool,
                      executor_config: ExecutorConfig | None = None) -> TaskScore:
    """Score generated texts against ``rows`` (each with ``answer``) in one form; never raises on model text."""
    if len(generations) != len(rows) or not rows:
        raise ValueError(f"need one generation per example and at least one example, got {len(generations)} "
                         f"generations for {len(rows)} examples.")
    answers, errors = [], 0
    executor = ToolExecutor(tools, executor_config) if tool_use else None
    try:
        for g in generations:
            if executor is None:
                answers.append(g.split("\n", 1)[0])
                continue
            res = executor.run(g)
            errors += not res.ok
            answers.append(res.output if res.ok else "")
    finally:
        if executor is not None:
            executor.close()
    hits = sum(normalize_answer(a) == normalize_answer(r["answer"]) and (a != "" or r["answer"] == "")
               for a, r in zip(answers, rows))
    return TaskScore(hits / len(rows), answers, list(generations), errors)


def evaluate_tasks(model, tokenizer, tasks: list[tuple[list[dict], dict[str, Tool]]], tool_use: bool,
                   max_new_tokens: int, batch_size: int = 64,
                   executor_config: ExecutorConfig | None = None) -> list[TaskScore]:
    """Scores on several tasks (``(examples, environment)`` pairs), generating for all of them in shared batches:
    a decoding step of a small model is largely bound by reading its weights (the 262k-row head of the default
    model alone is 0.67 GB in fp32), so a batch over every task's test set costs much less than a batch per task."""
    rows = [list(ex) for ex, _ in tasks]
    if any(not r for r in rows):
        raise ValueError("every task needs at least one test example.")
    flat = [x["prompt"] for r in rows for x in r]
    gens = batched_generate(model, tokenizer, flat, max_new_tokens, batch_size=batch_size,
                            eos_token_id=tokenizer.eos_token_id)
    out, k = [], 0
    for r, (_, tools) in zip(rows, tasks):
        out.append(score_generations(gens[k: k + len(r)], r, tools, tool_use, executor_config))
        k += len(r)
    return out


def evaluate_task(model, tokenizer, examples, tools: dict[str, Tool], tool_use: bool, max_new_tokens: int,
                  batch_size: int = 64, executor_config: ExecutorConfig | None = None) -> TaskScore:
    """Accuracy of ``model`` on ``examples`` (rows with ``prompt`` and ``answer``) in one form.

    Args:
        tools: the task's environment (``{call name: Tool}``), used by the executor in the tool-use form.
        tool_use: score the tool-use form (``True``) or the no-tool form.
        max_new_tokens: generation length.
    """
    return evaluate_tasks(model, tokenizer, [(examples, tools)], tool_use, max_new_tokens, batch_size,
                          executor_config)[0]
