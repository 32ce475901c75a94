"""Held-out scoring: answer each question (plain prompt, or ICL-kNN with k nearest seed examples) and score it."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from .generation import first_line, generate, icl_prompt, qa_prompt
from .scoring import Scorer, bootstrap_ci, score_all


@dataclass
class EvalResult:
    """Mean held-out score with its 95% bootstrap confidence interval, per-question scores and answers."""

    mean: float
    ci_low: float
    ci_high: float
    n: int
    seconds: float
    scores: list[float] = field(default_factory=list)
    responses: list[str] = field(default_factory=list)

    def to_dict(self, per_question: bool = False) -> dict:
        d = asdict(self)
        if not per_question:
            d.pop("scores"), d.pop("responses")
        return d


def knn_prompts(questions: Sequence[str], bank: Sequence[dict], k: int, retriever) -> list[str]:
    """ICL-kNN prompts: each question after the ``k`` bank examples most similar to it."""
    from .retrieval import nearest_examples

    if k > len(bank):
        raise ValueError(f"ICL-kNN needs k={k} examples but the bank holds {len(bank)}.")
    sims = retriever.similarity(list(questions), [f"{e['question']} {e['answer']}" for e in bank])
    return [icl_prompt([bank[j] for j in nearest_examples(sims[i], k)], question=q) for i, q in enumerate(questions)]


def evaluate_qa(model, tokenizer, rows: Sequence[dict], scorer: Scorer, icl_bank: Sequence[dict] | None = None,
                k: int = 0, retriever=None, max_new_tokens: int = 32, batch_size: int = 16, seed: int = 0,
                progress: bool = True) -> EvalResult:
    """Greedy answers to ``rows`` (``question``, ``answer``), scored against the reference answers."""
    if not rows:
        raise ValueError("evaluate_qa needs at least one held-out row.")
    start = time.perf_counter()
    questions = [r["question"] for r in rows]
    if k > 0:
        if icl_bank is None or retriever is None:
            raise ValueError("ICL-kNN evaluation (k > 0) needs icl_bank and retriever.")
        prompts = knn_prompts(questions, icl_bank, k, retriever)
    else:
        prompts = [qa_prompt(q) for q in questions]
    raw = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, temperature=0.0,
                   batch_size=batch_size, seed=seed, progress=progress, desc="held-out", stop=["\n"])
    responses = [first_line(t) for t in raw]
    scores = score_all(scorer, questions, responses, [r["answer"] for r in rows])
    mean, lo, hi = bootstrap_ci(scores, seed=seed)
    return EvalResult(mean, lo, hi, len(rows), time.perf_counter() - start, scores, responses)
