"""Membership inference on causal LMs: the likelihood attacks (loss, zlib, min-k%, min-k%++) and SaMIA, which needs
only sampled text, with one output format (higher score = member) and AUROC / TPR-at-FPR metrics.

    >>> results = hf_ext.privacy.attack(model, tok, texts, labels, methods=["loss", "min_k", "samia"])
    >>> results["samia"].auroc

SaMIA is also an ``evaluate`` metric: ``evaluate.load("samia")`` (see ``hf_ext/metrics/samia``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..common.import_utils import lazy_getattr

_import_structure: dict[str, list[str]] = {
    "attacks": ["attack", "AttackConfig", "AttackResult", "METHODS", "token_stats", "likelihood_scores"],
    "samia": ["SamiaConfig", "SamplingStats", "count_new_tokens", "run_samia",
              "samia_scores", "generate_samples", "rouge_n_recall", "split_prefix",
              "strip_prompt", "zlib_length"],
    "metrics": ["auroc", "auroc_difference", "tpr_at_fpr", "membership_metrics"],
    "data": ["load_mia_dataset", "MIAData"],
}
__all__ = [
    "AttackConfig",
    "AttackResult",
    "METHODS",
    "MIAData",
    "SamiaConfig",
    "SamplingStats",
    "attack",
    "auroc",
    "auroc_difference",
    "count_new_tokens",
    "generate_samples",
    "likelihood_scores",
    "load_mia_dataset",
    "membership_metrics",
    "rouge_n_recall",
    "run_samia",
    "samia_scores",
    "split_prefix",
    "strip_prompt",
    "token_stats",
    "tpr_at_fpr",
    "zlib_length",
]


__getattr__ = lazy_getattr(__name__, globals(), _import_structure)


if TYPE_CHECKING:
    from .attacks import METHODS, AttackConfig, AttackResult, attack, likelihood_scores, token_stats
    from .data import MIAData, load_mia_dataset
    from .metrics import auroc, auroc_difference, membership_metrics, tpr_at_fpr
    from .samia import (
        SamiaConfig,
        SamplingStats,
        count_new_tokens,
        generate_samples,
        rouge_n_recall,
        run_samia,
        samia_scores,
        split_prefix,
        strip_prompt,
        zlib_length,
    )
