"""ISARA self-alignment on TRL: from a few domain samples and no human instructions, retrieve -> generate in
context -> filter -> SFT, iterated (Guo et al., 2024, arXiv 2401.06785).

    >>> cfg = hf_ext.alignment.ISARAConfig(output_dir="out", iterations=3, samples_per_iteration=256)
    >>> trainer = hf_ext.alignment.ISARATrainer(model, tok, seed_dataset=seeds, pool="pydocs", args=cfg)
    >>> trainer.train(); trainer.save_model("out/final")

Our choices where the paper is silent (each a documented config field): the retriever (all-MiniLM-L6-v2 embeddings,
BM25 fallback) and its passage quality score; the prompt template (:mod:`.generation`); 4 in-context examples;
the filters (parse, word bounds, Self-Instruct's ROUGE-L 0.7 duplicate rule, ROUGE-L grounding of the answer in
its passage); 3 iterations; training on seeds + kept samples with one LoRA adapter carried across rounds; the
bundled domain's scorer (0.5 ROUGE-L F1 + 0.5 embedding cosine). The bundled domain is in :mod:`.domain`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..common.import_utils import lazy_getattr

_import_structure: dict[str, list[str]] = {
    "isara_config": ["ISARAConfig"],
    "isara_trainer": ["ISARATrainer", "validate_rows", "load_pool_passages"],
    "retrieval": ["Retriever", "passage_quality", "rank_pool", "nearest_examples", "bm25_scores"],
    "generation": ["icl_prompt", "qa_prompt", "generate"],
    "filtering": ["filter_samples", "parse_sample", "FilterResult", "max_rouge_l", "grounding_score"],
    "scoring": ["DomainScorer", "RewardModelScorer", "bootstrap_ci", "paired_bootstrap_diff", "score_all"],
    "evaluation": ["evaluate_qa", "EvalResult"],
    "report": ["IterationReport", "save_report"],
    "domain": ["load_seeds", "load_heldout", "load_pool", "evidence_found"],
}
__all__ = [
    "DomainScorer",
    "EvalResult",
    "FilterResult",
    "ISARAConfig",
    "ISARATrainer",
    "IterationReport",
    "Retriever",
    "RewardModelScorer",
    "bm25_scores",
    "bootstrap_ci",
    "evaluate_qa",
    "evidence_found",
    "filter_samples",
    "generate",
    "grounding_score",
    "icl_prompt",
    "load_heldout",
    "load_pool",
    "load_pool_passages",
    "load_seeds",
    "max_rouge_l",
    "nearest_examples",
    "paired_bootstrap_diff",
    "parse_sample",
    "passage_quality",
    "qa_prompt",
    "rank_pool",
    "save_report",
    "score_all",
    "validate_rows",
]

__getattr__ = lazy_getattr(__name__, globals(), _import_structure)

if TYPE_CHECKING:
    from .domain import evidence_found, load_heldout, load_pool, load_seeds
    from .evaluation import EvalResult, evaluate_qa
    from .filtering import FilterResult, filter_samples, grounding_score, max_rouge_l, parse_sample
    from .generation import generate, icl_prompt, qa_prompt
    from .isara_config import ISARAConfig
    from .isara_trainer import ISARATrainer, load_pool_passages, validate_rows
    from .report import IterationReport, save_report
    from .retrieval import Retriever, bm25_scores, nearest_examples, passage_quality, rank_pool
    from .scoring import DomainScorer, RewardModelScorer, bootstrap_ci, paired_bootstrap_diff, score_all
