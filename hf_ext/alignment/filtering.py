"""Filtering self-generated (question, answer) samples, every rejection counted by reason.

Checks, in this order (the first failing one is the sample's reason):
    1. ``unparsable``: the generation holds no "question ... Answer: answer" pair;
    2. ``not_a_question``: the question does not end with "?" (our choice; the model otherwise copies a sentence);
    3. ``question_length`` / ``answer_length``: word counts outside the configured bounds;
    4. ``duplicate``: ROUGE-L F1 of the question against any question kept so far (the seeds, earlier iterations,
       earlier samples of this batch) above ``max_rouge`` (Self-Instruct's rule and threshold, 0.7; ``rouge-score``);
    5. ``low_quality``: a quality score (pluggable; default :func:`grounding_score`) under ``min_quality``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..common.import_utils import require

REASONS = ("unparsable", "not_a_question", "question_length", "answer_length", "duplicate", "low_quality")
_PAIR = re.compile(r"^\s*(?P<q>[^\n]+?)\s*\n?\s*Answer:\s*(?P<a>[^\n]+)", re.S)


def parse_sample(text: str) -> tuple[str, str] | None:
    """(question, answer) from a generation continuing ``"Question:"``: the question runs to "Answer:", the answer
    to the end of its line; None when there is no such pair."""
    m = _PAIR.match(text)
    if not m:
        return None
    q, a = m.group("q").strip(), m.group("a").strip()
    q = q[len("Question:"):].strip() if q.startswith("Question:") else q
    return (q, a) if q and a else None


def rouge_scorer():
    """A ROUGE-L scorer (``rouge-score``, with stemming)."""
    require("rouge_score", "ROUGE-L deduplication and scoring")
    from rouge_score import rouge_scorer as rs

    return rs.RougeScorer(["rougeL"], use_stemmer=True)


def max_rouge_l(candidate: str, references: Sequence[str], scorer=None) -> float:
    """Highest ROUGE-L F1 of ``candidate`` against any of ``references`` (0 when there are none)."""
    scorer = scorer or rouge_scorer()
    return max((scorer.score(r, candidate)["rougeL"].fmeasure for r in references), default=0.0)


def grounding_score(question: str, answer: str, passage: str | None, scorer=None) -> float:
    """Default quality score: ROUGE-L precision of the answer against the passage it was written from (how much of
    the answer the passage supports; our choice). Without a passage: 1.0 (nothing to check against)."""
    if not passage:
        return 1.0
    scorer = scorer or rouge_scorer()
    return float(scorer.score(passage, answer)["rougeL"].precision)


@dataclass
class FilterResult:
    """Kept samples (dicts with ``question``, ``answer`` and whatever the candidate carried) and rejection counts."""

    kept: list[dict] = field(default_factory=list)
    rejected: Counter = field(default_factory=Counter)

    @property
    def total_rejected(self) -> int:
        return sum(self.rejected.values())

    def to_dict(self) -> dict:
        return {"kept": len(self.kept), "rejected": {r: int(self.rejected.get(r, 0)) for r in REASONS}}


def filter_samples(
    candidates: Sequence[dict],
    existing_questions: Sequence[str] = (),
    question_words: tuple[int, int] = (3, 40),
    answer_words: tuple[int, int] = (3, 60),
    max_rouge: float = 0.7,
    min_quality: float = 0.0,
    quality_fn: Callable[[str, str, str | None], float] | None = None,
    require_question_mark: bool = True,
) -> FilterResult:
    """Apply the checks of the module docstring to ``candidates`` (dicts with ``text``, the raw generation, and
    optionally ``passage``); a kept sample's question is added to the duplicate references at once."""
    scorer = rouge_scorer()
    quality_fn = quality_fn or (lambda q, a, p: grounding_score(q, a, p, scorer))
    seen = list(existing_questions)
    result = FilterResult()
    for cand in candidates:
        pair = parse_sample(cand["text"])
        if pair is None:
            result.rejected["unparsable"] += 1
            continue
        q, a = pair
        if require_question_mark and not q.endswith("?"):
            result.rejected["not_a_question"] += 1
            continue
        if not question_words[0] <= len(q.split()) <= question_words[1]:
            result.rejected["question_length"] += 1
            continue
        if not answer_words[0] <= len(a.split()) <= answer_words[1]:
            result.rejected["answer_length"] += 1
            continue
        if max_rouge_l(q, seen, scorer) > max_rouge:
            result.rejected["duplicate"] += 1
            continue
        quality = float(quality_fn(q, a, cand.get("passage")))
        if quality < min_quality:
            result.rejected["low_quality"] += 1
            continue
        seen.append(q)
        result.kept.append({**{k: v for k, v in cand.items() if k != "text"}, "question": q, "answer": a,
                            "quality": quality})
    return result
