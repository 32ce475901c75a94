"""Membership-inference attacks on a causal LM, one output format for all: higher score = member.

* ``loss``: minus the mean token negative log-likelihood (Yeom et al. 2018).
* ``zlib``: minus the mean NLL divided by the zlib-compressed byte length of the text (Carlini et al. 2021).
* ``min_k``: mean log-probability of the ``k`` fraction of lowest-probability tokens (Min-K% Prob, Shi et al. 2024).
* ``min_k_plus_plus``: the same over per-token ``(log p(x_t) - mu_t) / sigma_t``, with ``mu_t`` / ``sigma_t`` the
  mean / standard deviation of ``log p(z)`` under the model's next-token distribution (Min-K%++, Zhang et al. 2024).
* ``samia`` / ``samia_zlib``: sampling-based, needs only generated text (:mod:`hf_ext.privacy.samia`).

Our choices: the likelihood attacks score every predicted token of the tokenized text (BOS included as context when
the tokenizer adds one); min-k keeps ``max(1, int(k * n_tokens))`` tokens; ``k = 0.2`` for both min-k variants.
The four likelihood attacks share one forward pass and the two SaMIA variants one sampling run; each result's
``seconds`` counts the shared work in full, i.e. the cost of running that method alone.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from transformers.utils import logging

from ..common.config import ConfigMixin
from .metrics import TPR_MODES, check_labels, membership_metrics
from .samia import SamiaConfig, SamplingStats, generate_samples, rouge_n_recall, samia_scores, split_prefix, zlib_length

logger = logging.get_logger(__name__)

LIKELIHOOD_METHODS = ("loss", "zlib", "min_k", "min_k_plus_plus")
SAMPLING_METHODS = ("samia", "samia_zlib")
METHODS = LIKELIHOOD_METHODS + SAMPLING_METHODS
DEFAULT_METHODS = ("loss", "zlib", "min_k", "min_k_plus_plus", "samia")


@dataclass
class AttackConfig(ConfigMixin):
    """Settings of :func:`attack` shared by the likelihood attacks.

    Args:
        k: fraction of lowest-scoring tokens kept by ``min_k`` and ``min_k_plus_plus``.
        batch_size: texts per forward pass.
        max_length: truncate texts to this many tokens (None: no truncation).
        fpr: false-positive rate at which TPR is reported.
        tpr_mode: ``"le"`` (best TPR with FPR <= fpr) or ``"nearest"`` (see :mod:`hf_ext.privacy.metrics`).
    """

    k: float = field(default=0.2, metadata={"help": "Fraction of lowest-scoring tokens for min-k / min-k++."})
    batch_size: int = field(default=4, metadata={"help": "Texts per forward pass."})
    max_length: int | None = field(default=None, metadata={"help": "Truncate texts to this many tokens."})
    fpr: float = field(default=0.1, metadata={"help": "FPR at which TPR is reported."})
    tpr_mode: str = field(default="le", metadata={"help": "'le' (FPR <= target) or 'nearest' ROC point."})

    def __post_init__(self) -> None:
        self.check_types()
        if not 0.0 < self.k <= 1.0:
            raise ValueError(f"k must be in (0, 1], got {self.k}.")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}.")
        if self.max_length is not None and self.max_length < 2:
            raise ValueError(f"max_length must be >= 2 or None, got {self.max_length}.")
        if not 0.0 <= self.fpr <= 1.0:
            raise ValueError(f"fpr must be in [0, 1], got {self.fpr}.")
        if self.tpr_mode not in TPR_MODES:
            raise ValueError(f"tpr_mode must be one of {TPR_MODES}, got {self.tpr_mode!r}.")


@dataclass
class AttackResult:
    """One attack's scores (higher = member) and, with labels, AUROC and TPR at ``fpr``; for the SaMIA variants,
    ``sampling`` holds the shared sampling run's :class:`~hf_ext.privacy.samia.SamplingStats` (tokens generated)."""

    method: str
    scores: list[float]
    auroc: float | None = None
    tpr_at_fpr: float | None = None
    fpr: float | None = None
    seconds: float = 0.0
    sampling: SamplingStats | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TokenStats:
    """Per-token statistics of one text: log p of each actual token, and mean / std of log p under the model."""

    logprobs: torch.Tensor
    mu: torch.Tensor
    sigma: torch.Tensor


def token_stats(model, tokenizer, texts: Sequence[str], batch_size: int = 4, max_length: int | None = None,
                progress: bool = True) -> list[TokenStats]:
    """Teacher-forced statistics of every predicted token of each text (one forward pass per batch)."""
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    out: list[TokenStats] = []
    for start in tqdm(range(0, len(texts), batch_size), desc="MIA forward", disable=not progress):
        chunk = list(texts[start : start + batch_size])
        encs = [tokenizer(t, truncation=max_length is not None, max_length=max_length).input_ids for t in chunk]
        for i, ids in enumerate(encs):
            if len(ids) < 2:
                raise ValueError(f"text {start + i} has {len(ids)} token(s); at least 2 are needed to score one.")
        width = max(len(ids) for ids in encs)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids in encs], device=device)
        mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in encs], device=device)
        with torch.no_grad():
            logits = model(input_ids=input_ids, attention_mask=mask).logits
        for b, ids in enumerate(encs):
            n = len(ids) - 1
            # One text at a time keeps the (tokens x vocab) float32 temporaries small for 262k-token vocabularies.
            logp = torch.log_softmax(logits[b, :n].float(), dim=-1)
            target = input_ids[b, 1 : n + 1]
            tok = logp.gather(-1, target[:, None])[:, 0]
            p = logp.exp()
            mu = (p * logp).sum(-1)
            var = ((p * logp.square()).sum(-1) - mu.square()).clamp_min(1e-12)
            out.append(TokenStats(tok.cpu(), mu.cpu(), var.sqrt().cpu()))
        del logits
    return out


def _lowest_k_mean(values: torch.Tensor, k: float) -> float:
    m = max(1, int(k * values.numel()))
    return float(values.sort().values[:m].mean())


def likelihood_scores(stats: Sequence[TokenStats], texts: Sequence[str], method: str, k: float = 0.2) -> list[float]:
    """Scores (higher = member) of one likelihood attack from precomputed :class:`TokenStats`."""
    if method == "loss":
        return [float(s.logprobs.mean()) for s in stats]
    if method == "zlib":
        return [float(s.logprobs.mean()) / zlib_length(t) for s, t in zip(stats, texts)]
    if method == "min_k":
        return [_lowest_k_mean(s.logprobs, k) for s in stats]
    if method == "min_k_plus_plus":
        return [_lowest_k_mean((s.logprobs - s.mu) / s.sigma, k) for s in stats]
    raise ValueError(f"Unknown likelihood attack {method!r}; choose one of {LIKELIHOOD_METHODS}.")


def check_context(model, tokenizer, texts: Sequence[str], max_length: int | None = None) -> None:
    """Raise ``ValueError`` naming the first text longer than the model's context (unless ``max_length`` truncates)."""
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is None or (max_length is not None and max_length <= limit):
        return
    for i, t in enumerate(texts):
        n = len(tokenizer(t).input_ids)
        if n > limit:
            raise ValueError(f"text {i} has {n} tokens, more than the model's context of {limit}; shorten it or set "
                             f"max_length (CLI: --max-length) to truncate.")


def check_texts(texts: Sequence[str], name: str = "texts") -> list[str]:
    if isinstance(texts, str):
        raise ValueError(f"{name} must be a list of strings, not one string.")
    texts = list(texts)
    if not texts:
        raise ValueError(f"{name} is empty.")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if bad:
        raise ValueError(f"{name} must be non-empty strings; entries {bad[:5]} are not.")
    return texts


def attack(
    model,
    tokenizer,
    texts: Sequence[str],
    labels: Sequence[int] | None = None,
    methods: Sequence[str] = DEFAULT_METHODS,
    config: AttackConfig | None = None,
    samia_config: SamiaConfig | None = None,
    progress: bool = True,
) -> dict[str, AttackResult]:
    """Run membership-inference attacks on ``texts``; with 0/1 ``labels`` (1 = member) also AUROC and TPR.

    Returns:
        ``{method: AttackResult}`` in the order of ``methods``.
    """
    cfg = config or AttackConfig()
    scfg = samia_config or SamiaConfig()
    texts = check_texts(texts)
    if isinstance(methods, str):
        methods = [methods]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"Unknown attack method(s) {unknown or methods}; choose from {METHODS}.")
    if labels is not None:
        labels = check_labels(labels, len(texts)).tolist()
    like = [m for m in methods if m in LIKELIHOOD_METHODS]
    samp = [m for m in methods if m in SAMPLING_METHODS]
    # Every check that needs no forward pass runs before the first one.
    if like:
        check_context(model, tokenizer, texts, cfg.max_length)
    if samp:
        for i, t in enumerate(texts):
            split_prefix(t, scfg.prefix_ratio, scfg.ngram, index=i)
    scores: dict[str, list[float]] = {}
    seconds: dict[str, float] = {}
    sampling: SamplingStats | None = None
    if like:
        t0 = time.perf_counter()
        stats = token_stats(model, tokenizer, texts, cfg.batch_size, cfg.max_length, progress=progress)
        shared = time.perf_counter() - t0
        for m in like:
            t1 = time.perf_counter()
            scores[m] = likelihood_scores(stats, texts, m, cfg.k)
            seconds[m] = shared + time.perf_counter() - t1
    if samp:
        rouge_n_recall("a", "a", scfg.ngram)  # builds the scorer (imports nltk) outside the timed region
        t0 = time.perf_counter()
        samples, sampling = generate_samples(model, tokenizer, texts, scfg, progress=progress, return_stats=True)
        shared = time.perf_counter() - t0
        for m in samp:
            t1 = time.perf_counter()
            scores[m] = samia_scores(texts, samples, scfg.prefix_ratio, scfg.ngram, zlib=m == "samia_zlib", strip=False)
            seconds[m] = shared + time.perf_counter() - t1
    results = {}
    for m in methods:
        bad = [i for i, v in enumerate(scores[m]) if not math.isfinite(v)]
        if bad:
            raise ValueError(f"Attack {m!r} produced non-finite scores for texts {bad[:5]}.")
        res = AttackResult(m, scores[m], seconds=seconds[m], sampling=sampling if m in SAMPLING_METHODS else None)
        if labels is not None:
            met = membership_metrics(scores[m], labels, cfg.fpr, cfg.tpr_mode)
            res.auroc, res.tpr_at_fpr, res.fpr = met["auroc"], met["tpr_at_fpr"], met["fpr"]
        results[m] = res
    return results
