"""SaMIA: sampling-based pseudo-likelihood membership inference (Kaneko et al., arXiv 2404.11262).

A text is split into a prefix (the first ``prefix_ratio`` of its whitespace words) and a reference (the rest). The
model samples ``num_samples`` continuations of the prefix; the score is the mean ROUGE-N recall of the reference
against each continuation. Higher = member: a model that saw the text tends to regenerate its words. SaMIA*zlib
multiplies each sample's recall by the zlib-compressed byte length of that continuation (the candidate), as the
paper's code does, which discounts short, repetitive continuations.

Choices that are ours (the paper or its code leaves them open or gets them wrong), each a :class:`SamiaConfig` field:

* the prefix has ``floor(n_words * prefix_ratio)`` words (as the paper's sampling script); a text needs at least
  one prefix word and ``ngram`` reference words, else a ``ValueError`` names it;
* the prompt is removed from each sample: generated samples keep only the new tokens; precomputed samples that
  start with the prefix's words lose those words. (The official script drops a fixed word count instead.)
* each continuation is cut to as many tokens as the reference has under the model's tokenizer
  (``max_new_tokens=None``; the official script samples up to 1,024 tokens), so scores do not depend on batching;
* ROUGE-N recall counts reference n-grams in the denominator (the official code divides by the reference's word
  count even for N > 1); tokens are whitespace-split with case kept; the zlib length is taken of the candidate's
  words joined by single spaces.
* sampling is seeded (``seed=0``) inside ``torch.random.fork_rng``, so the caller's RNG state is untouched.

The cost of SaMIA is generation: ``generate_samples(..., return_stats=True)`` also returns a :class:`SamplingStats`
with the tokens generated (as ``generate`` produced them, and as kept after the cut to the reference length) and the
wall time, so a benchmark can report time per generated token.
"""

from __future__ import annotations

import time
import zlib as _zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from transformers.utils import logging

from ..common.config import ConfigMixin

logger = logging.get_logger(__name__)


@dataclass
class SamiaConfig(ConfigMixin):
    """Settings of a SaMIA run.

    Args:
        num_samples: continuations sampled per text (the paper uses 10).
        prefix_ratio: fraction of whitespace words given to the model as the prompt.
        ngram: N of ROUGE-N recall (the paper uses 1).
        zlib: multiply each sample's recall by the zlib length of the continuation (SaMIA*zlib).
        temperature / top_k / top_p: sampling settings (the paper: 1, 50, 1).
        max_new_tokens: new tokens per sample; None = as many as the reference has under the model's tokenizer.
        batch_size: sequences (prompts x samples) per ``generate`` call.
        seed: seed for sampling (inside ``fork_rng``); None uses the current RNG state.
    """

    num_samples: int = field(default=10, metadata={"help": "Continuations sampled per text (paper: 10)."})
    prefix_ratio: float = field(default=0.5, metadata={"help": "Fraction of whitespace words used as the prompt."})
    ngram: int = field(default=1, metadata={"help": "N of ROUGE-N recall (paper: 1)."})
    zlib: bool = field(default=False, metadata={"help": "Multiply by the candidate's zlib length (SaMIA*zlib)."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (paper: 1)."})
    top_k: int = field(default=50, metadata={"help": "Top-k sampling (paper: 50)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling threshold (paper: 1)."})
    max_new_tokens: int | None = field(
        default=None, metadata={"help": "New tokens per sample; None = the reference's token count (our choice)."}
    )
    batch_size: int = field(default=32, metadata={"help": "Sequences per generate call."})
    seed: int | None = field(default=0, metadata={"help": "Sampling seed (RNG state restored after); None = unseeded."})

    def __post_init__(self) -> None:
        self.check_types()
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {self.num_samples}.")
        if not 0.0 < self.prefix_ratio < 1.0:
            raise ValueError(f"prefix_ratio must be in (0, 1), got {self.prefix_ratio}.")
        if not 1 <= self.ngram <= 9:
            raise ValueError(f"ngram must be in 1..9, got {self.ngram}.")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}.")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 disables it), got {self.top_k}.")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}.")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1 or None, got {self.max_new_tokens}.")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}.")


# ----------------------------------------------------------------------------------------------- pure functions


def split_prefix(text: str, prefix_ratio: float = 0.5, ngram: int = 1, index: int | None = None) -> tuple[list, list]:
    """``(prefix_words, reference_words)`` of ``text`` split on whitespace.

    Raises:
        ValueError: the text is too short to leave one prefix word and ``ngram`` reference words.
    """
    words = text.split()
    k = int(len(words) * prefix_ratio)
    if k < 1 or len(words) - k < ngram:
        where = f"text {index}" if index is not None else "text"
        raise ValueError(
            f"{where} has {len(words)} whitespace words: too short for prefix_ratio={prefix_ratio} (prefix {k} "
            f"words, reference {len(words) - k}); it needs at least 1 prefix word and {ngram} reference word(s)."
        )
    return words[:k], words[k:]


class _WhitespaceTokenizer:
    """rouge-score tokenizer that keeps case and punctuation: tokens are exactly ``str.split()``."""

    def tokenize(self, text: str) -> list[str]:
        return text.split()


_SCORERS: dict[int, object] = {}


def rouge_n_recall(candidate: str | Sequence[str], reference: str | Sequence[str], n: int = 1) -> float:
    """ROUGE-N recall: clipped n-gram overlap / number of reference n-grams, case-sensitive whitespace tokens.

    Not ``evaluate.load("rouge")``: that returns the F-measure and its default tokenizer lowercases and drops
    punctuation, which is not SaMIA's score. rouge-score's scorer with a whitespace tokenizer computes exactly
    clipped recall (each n-gram counts at most as often as it occurs in the reference), so we use it.
    An empty candidate scores 0; so does a reference with no n-gram (callers reject those texts earlier).
    """
    if not 1 <= n <= 9:
        raise ValueError(f"n must be in 1..9 (rouge-score's rougeN range), got {n}.")
    cand = candidate if isinstance(candidate, str) else " ".join(candidate)
    ref = reference if isinstance(reference, str) else " ".join(reference)
    scorer = _SCORERS.get(n)
    if scorer is None:
        from rouge_score import rouge_scorer

        scorer = _SCORERS[n] = rouge_scorer.RougeScorer([f"rouge{n}"], tokenizer=_WhitespaceTokenizer())
    return float(scorer.score(ref, cand)[f"rouge{n}"].recall)


def zlib_length(text: str) -> int:
    """Byte length of the zlib-compressed UTF-8 text (the paper's entropy proxy)."""
    return len(_zlib.compress(text.encode("utf-8")))


def strip_prompt(sample: str, prefix_words: Sequence[str]) -> list[str]:
    """Words of ``sample`` after the prompt: drops the leading words when they equal ``prefix_words``."""
    words = sample.split()
    k = len(prefix_words)
    if k and words[:k] == list(prefix_words):
        return words[k:]
    return words


def samia_scores(
    references: Sequence[str],
    samples: Sequence[Sequence[str]],
    prefix_ratio: float = 0.5,
    ngram: int = 1,
    zlib: bool = False,
    strip: bool = True,
) -> list[float]:
    """SaMIA score per text from precomputed samples (continuations, or prompt + continuation when ``strip``).

    Args:
        references: the full target texts (prefix + reference).
        samples: ``samples[i]`` holds the sampled texts for ``references[i]`` (at least one each).
        prefix_ratio / ngram / zlib: as in :class:`SamiaConfig`.
        strip: remove the prompt words from samples that start with them.
    """
    if len(samples) != len(references):
        raise ValueError(f"samples has {len(samples)} entries but references has {len(references)}; they must match.")
    scores = []
    for i, (text, group) in enumerate(zip(references, samples)):
        if isinstance(group, str) or not len(group):
            raise ValueError(f"samples[{i}] must be a non-empty list of strings, got {type(group).__name__}.")
        prefix, ref = split_prefix(text, prefix_ratio, ngram, index=i)
        per_sample = []
        for s in group:
            if not isinstance(s, str):
                raise ValueError(f"samples[{i}] holds a {type(s).__name__}; every sample must be a string.")
            cand = strip_prompt(s, prefix) if strip else s.split()
            r = rouge_n_recall(cand, ref, ngram)
            per_sample.append(r * zlib_length(" ".join(cand)) if zlib else r)
        scores.append(sum(per_sample) / len(per_sample))
    return scores


# ---------------------------------------------------------------------------------------------------- sampling


@dataclass
class SamplingStats:
    """What one :func:`generate_samples` run generated, summed over texts and samples.

    Args:
        texts: texts sampled for.
        sequences: sampled continuations (``texts * num_samples``).
        generate_calls: ``model.generate`` calls (batches).
        generated_tokens: new tokens ``generate`` produced: per sequence, up to and including its first EOS (the
            padding ``generate`` appends after a finished sequence is not counted), else every new position. In a
            batch every sequence runs to the largest budget in it, so this exceeds ``kept_tokens``.
        kept_tokens: the same after each sequence is cut to its text's budget (the tokens decoded and scored).
        padded_positions: sequences x new positions of each call (the decode work a batch did, padding included).
        seconds: wall time of the sampling loop (tokenizing, generating, decoding).
    """

    texts: int = 0
    sequences: int = 0
    generate_calls: int = 0
    generated_tokens: int = 0
    kept_tokens: int = 0
    padded_positions: int = 0
    seconds: float = 0.0

    @property
    def ms_per_generated_token(self) -> float:
        """Sampling wall time per generated token, in milliseconds (NaN when nothing was generated)."""
        return 1000.0 * self.seconds / self.generated_tokens if self.generated_tokens else float("nan")

    def to_dict(self) -> dict:
        return asdict(self)


def count_new_tokens(new_ids: torch.Tensor, budgets: Sequence[int], eos_ids: Sequence[int] = ()) -> tuple[int, int]:
    """``(generated, kept)`` token counts of one ``generate`` batch's new tokens (``sequences x positions``).

    A sequence's generated length is the position of its first token in ``eos_ids`` plus one (``generate`` pads
    after it), or the full width without one; its kept length is that, capped at its budget ``budgets[row]``.
    """
    if new_ids.dim() != 2 or new_ids.shape[0] != len(budgets):
        raise ValueError(f"new_ids must be (sequences x positions) with one budget per sequence; got shape "
                         f"{tuple(new_ids.shape)} and {len(budgets)} budgets.")
    width = new_ids.shape[1]
    lengths = torch.full((new_ids.shape[0],), width, dtype=torch.long)
    if len(eos_ids) and width:
        is_eos = torch.isin(new_ids.cpu(), torch.tensor(list(eos_ids), dtype=new_ids.dtype))
        first = is_eos.int().argmax(dim=1)
        lengths = torch.where(is_eos.any(dim=1), first + 1, lengths)
    kept = torch.minimum(lengths, torch.tensor(list(budgets), dtype=torch.long))
    return int(lengths.sum()), int(kept.sum())


def _eos_ids(model) -> list[int]:
    """The ids that end a sequence in ``generate``: its generation config's (none: it runs every step)."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        return []
    return [int(e) for e in eos] if isinstance(eos, (list, tuple)) else [int(eos)]


def generate_samples(model, tokenizer, texts: Sequence[str], config: SamiaConfig | None = None,
                     progress: bool = True, return_stats: bool = False,
                     ) -> list[list[str]] | tuple[list[list[str]], SamplingStats]:
    """``num_samples`` sampled continuations (prompt removed) of each text's prefix, generated in batches.

    With ``return_stats``, returns ``(samples, SamplingStats)``: the tokens generated and the wall time.
    """
    from tqdm.auto import tqdm

    t_start = time.perf_counter()

    cfg = config or SamiaConfig()
    splits = [split_prefix(t, cfg.prefix_ratio, cfg.ngram, index=i) for i, t in enumerate(texts)]
    prompts = [" ".join(p) for p, _ in splits]
    if cfg.max_new_tokens is not None:
        budgets = [cfg.max_new_tokens] * len(texts)
    else:
        budgets = [len(tokenizer(" " + " ".join(r), add_special_tokens=False).input_ids) for _, r in splits]
    per_call = max(1, cfg.batch_size // cfg.num_samples)
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise ValueError("The tokenizer has neither a pad nor an EOS token; batched sampling needs one to pad.")
    old_side, set_pad = tokenizer.padding_side, tokenizer.pad_token is None
    # Batched decoder-only generation needs left padding; restore the caller's tokenizer afterwards.
    tokenizer.padding_side = "left"
    if set_pad:
        tokenizer.pad_token = tokenizer.eos_token
    out: list[list[str]] = []
    stats = SamplingStats(texts=len(texts), sequences=len(texts) * cfg.num_samples)
    eos_ids = _eos_ids(model)
    fork_devices = [device.index or 0] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=fork_devices, enabled=cfg.seed is not None), torch.no_grad():
            if cfg.seed is not None:
                torch.manual_seed(cfg.seed)
            for start in tqdm(range(0, len(texts), per_call), desc="SaMIA sampling", disable=not progress):
                chunk, budget = prompts[start : start + per_call], budgets[start : start + per_call]
                enc = tokenizer(chunk, return_tensors="pt", padding=True).to(device)
                gen = model.generate(
                    **enc, do_sample=True, temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
                    max_new_tokens=max(budget), num_return_sequences=cfg.num_samples, pad_token_id=pad_id,
                )
                new = gen[:, enc.input_ids.shape[1]:]  # prompt stripping at the token level
                generated, kept = count_new_tokens(new, [b for b in budget for _ in range(cfg.num_samples)], eos_ids)
                stats.generate_calls += 1
                stats.generated_tokens += generated
                stats.kept_tokens += kept
                stats.padded_positions += new.numel()
                for j in range(len(chunk)):
                    rows = new[j * cfg.num_samples : (j + 1) * cfg.num_samples, : budget[j]]
                    out.append(tokenizer.batch_decode(rows, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = old_side
        if set_pad:
            tokenizer.pad_token = None
    stats.seconds = time.perf_counter() - t_start
    return (out, stats) if return_stats else out


def run_samia(model, tokenizer, texts: Sequence[str], config: SamiaConfig | None = None, progress: bool = True,
          ) -> list[float]:
    """SaMIA scores (higher = member) of ``texts`` under ``model``: sample, strip the prompt, score."""
    cfg = config or SamiaConfig()
    samples = generate_samples(model, tokenizer, texts, cfg, progress=progress)
    return samia_scores(texts, samples, cfg.prefix_ratio, cfg.ngram, cfg.zlib, strip=False)


def compute_samia(
    references: Sequence[str],
    samples: Sequence[Sequence[str]] | None = None,
    labels: Sequence[int] | None = None,
    model=None,
    tokenizer=None,
    config: SamiaConfig | None = None,
    fpr: float = 0.1,
    tpr_mode: str = "le",
    strip: bool = True,
    progress: bool = True,
) -> dict:
    """What ``evaluate.load("samia").compute`` returns: ``{"scores"}``, plus ``auroc`` / ``tpr_at_fpr`` / ``fpr``
    with labels. Give either precomputed ``samples`` or a ``model`` and ``tokenizer`` to sample from."""
    from .metrics import check_labels, membership_metrics

    cfg = config or SamiaConfig()
    if isinstance(references, str) or not len(references):
        raise ValueError("references must be a non-empty list of texts.")
    if labels is not None:
        labels = check_labels(labels, len(references)).tolist()
    if samples is not None and model is not None:
        raise ValueError("Pass either samples (precomputed) or model + tokenizer (sample now), not both.")
    if samples is None:
        if model is None or tokenizer is None:
            raise ValueError("Without samples, both model and tokenizer are needed to sample continuations.")
        samples = generate_samples(model, tokenizer, references, cfg, progress=progress)
        strip = False  # generated samples hold only new tokens already
    scores = samia_scores(references, samples, cfg.prefix_ratio, cfg.ngram, cfg.zlib, strip=strip)
    out: dict = {}
    if labels is not None:
        out.update(membership_metrics(scores, labels, fpr, tpr_mode))
    out["scores"] = scores
    return out
