"""Scoring a response: any callable ``scorer(prompt, response, reference) -> float`` (reference may be None).

* :class:`DomainScorer`: the bundled domain's scorer, ``rouge_weight x ROUGE-L F1 + (1 - rouge_weight) x cosine
  similarity`` of the response and the reference answer (sentence embeddings, cosine clipped at 0); in [0, 1].
  The 0.5 / 0.5 mix is our choice.
* :class:`RewardModelScorer`: a reward model through a ``transformers`` text-classification pipeline, for users
  who have one (the score of the prompt + response; no reference needed).
* :func:`bootstrap_ci`: mean and percentile bootstrap confidence interval of per-question scores;
  :func:`paired_bootstrap_diff`: the same for the difference of two systems on the same questions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .filtering import rouge_scorer

Scorer = Callable[[str, str, "str | None"], float]


class DomainScorer:
    """ROUGE-L + embedding similarity against a reference answer (see the module docstring).

    Args:
        retriever: a :class:`~hf_ext.alignment.retrieval.Retriever` of kind ``"embedding"`` (None: a new one with
            the offline all-MiniLM-L6-v2), shared with retrieval so the model loads once.
        rouge_weight: weight of ROUGE-L F1; the rest goes to embedding similarity (0.5: our choice).
    """

    def __init__(self, retriever=None, rouge_weight: float = 0.5):
        from .retrieval import Retriever

        if not 0.0 <= rouge_weight <= 1.0:
            raise ValueError(f"rouge_weight must be in [0, 1], got {rouge_weight}.")
        if retriever is not None and retriever.kind != "embedding":
            retriever = None  # a BM25 retriever has no embeddings: load the embedding model for scoring
        self.retriever = retriever or Retriever("embedding")
        self.rouge_weight = rouge_weight
        self._rouge = rouge_scorer()

    def __call__(self, prompt: str, response: str, reference: str | None) -> float:
        return self.score_many([prompt], [response], [reference])[0]

    def score_many(self, prompts: Sequence[str], responses: Sequence[str],
                   references: Sequence[str | None]) -> list[float]:
        """Scores of many responses at once (one embedding batch)."""
        if any(r is None for r in references):
            raise ValueError("DomainScorer needs a reference answer for every response.")
        rouge = np.array([self._rouge.score(r, s)["rougeL"].fmeasure for s, r in zip(responses, references)])
        emb_r = self.retriever.embed([s if s.strip() else "-" for s in responses])
        emb_ref = self.retriever.embed(list(references))
        cos = np.clip((emb_r * emb_ref).sum(axis=1), 0.0, 1.0)
        w = self.rouge_weight
        return [float(x) for x in w * rouge + (1 - w) * cos]


class RewardModelScorer:
    """A reward model as a scorer: ``pipeline("text-classification")`` over ``prompt + response``.

    Args:
        model: a model id / folder, or a ready ``transformers`` text-classification pipeline.
        label: the label whose score is the reward (None: the raw logit of the first label, the usual
            single-output reward model).
        template: how prompt and response are joined.
    """

    def __init__(self, model, label: str | None = None, template: str = "Question: {prompt}\nAnswer: {response}"):
        if isinstance(model, str):
            from transformers import pipeline

            model = pipeline("text-classification", model=model)
        self.pipe = model
        self.label = label
        self.template = template

    def __call__(self, prompt: str, response: str, reference: str | None = None) -> float:
        return self.score_many([prompt], [response], [reference])[0]

    def score_many(self, prompts: Sequence[str], responses: Sequence[str],
                   references: Sequence[str | None] = ()) -> list[float]:
        texts = [self.template.format(prompt=p, response=r) for p, r in zip(prompts, responses)]
        if self.label is None:
            out = self.pipe(texts, function_to_apply="none", top_k=None)
            return [float(o[0]["score"] if isinstance(o, list) else o["score"]) for o in out]
        out = self.pipe(texts, top_k=None)
        return [float(next(x["score"] for x in o if x["label"] == self.label)) for o in out]


def score_all(scorer: Scorer, prompts: Sequence[str], responses: Sequence[str],
              references: Sequence[str | None]) -> list[float]:
    """Scores of every response, batched when the scorer has ``score_many``."""
    if len({len(prompts), len(responses), len(references)}) != 1:
        raise ValueError("prompts, responses and references must have the same length.")
    many = getattr(scorer, "score_many", None)
    if many is not None:
        return [float(x) for x in many(prompts, responses, references)]
    return [float(scorer(p, r, ref)) for p, r, ref in zip(prompts, responses, references)]


def bootstrap_ci(values: Sequence[float], n_boot: int = 2000, alpha: float = 0.05,
                 seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): the mean and its percentile bootstrap ``1 - alpha`` confidence interval."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("bootstrap_ci needs at least one value.")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(x.mean()), float(lo), float(hi)


def paired_bootstrap_diff(a: Sequence[float], b: Sequence[float], n_boot: int = 2000, alpha: float = 0.05,
                          seed: int = 0) -> tuple[float, float, float]:
    """(mean of a - b, low, high) over the same questions, resampled together (a paired bootstrap)."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.size == 0:
        raise ValueError("paired_bootstrap_diff needs two non-empty score lists of the same length.")
    return bootstrap_ci(x - y, n_boot=n_boot, alpha=alpha, seed=seed)
