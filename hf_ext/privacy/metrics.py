"""Membership-inference metrics: AUROC and TPR at a fixed FPR, through scikit-learn's ROC curve.

Scores follow one convention everywhere in :mod:`hf_ext.privacy`: higher = more likely a member (label 1).

TPR at a target FPR has two readings in the literature, and they differ on small sets:

* ``"le"`` (our default): the largest TPR over ROC operating points whose FPR is <= the target. This is an
  achievable, conservative operating point (the attacker never exceeds the FPR budget), as in Carlini et al. 2022.
* ``"nearest"``: the TPR of the ROC point whose FPR is closest to the target (ties: the first such point of
  scikit-learn's curve, i.e. the lower threshold index). This is what the official SaMIA evaluation script reports;
  the point may lie above the target FPR.

:func:`auroc_difference` compares two attacks on the same texts: the AUROC difference with a paired bootstrap
confidence interval over texts (members and non-members resampled separately, both attacks on the same resample).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..common.import_utils import require

TPR_MODES = ("le", "nearest")


def check_labels(labels: Sequence[int], n: int | None = None, name: str = "labels", both_classes: bool = True
                 ) -> np.ndarray:
    """``labels`` as an int array, after checking they are 0/1, hold both classes when ``both_classes`` (AUROC /
    TPR need them) and are ``n`` long when given. Callers check before the expensive part (sampling, forward
    passes), not after it."""
    arr = np.asarray(list(labels))
    if n is not None and len(arr) != n:
        raise ValueError(f"{name} has {len(arr)} entries but there are {n} texts/scores; they must match.")
    bad = [v for v in arr.tolist() if isinstance(v, str) or v not in (0, 1)]
    if bad:
        raise ValueError(f"{name} must be 0 (non-member) or 1 (member); got {sorted(set(map(repr, bad)))[:5]}.")
    if both_classes and len(set(arr.tolist())) < 2:
        raise ValueError(f"AUROC / TPR need both members (1) and non-members (0) in {name}; pass no labels for "
                         "scores only.")
    return arr.astype(int)


def _checked(scores: Sequence[float], labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(list(scores), dtype=float)
    y = check_labels(labels, len(s))
    if np.isnan(s).any():
        raise ValueError("scores contain NaN; every text needs a finite score.")
    return s, y


def auroc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve of ``scores`` (higher = member) against 0/1 ``labels``."""
    require("sklearn", "Membership-inference AUROC")
    from sklearn.metrics import roc_auc_score

    s, y = _checked(scores, labels)
    return float(roc_auc_score(y, s))


def tpr_at_fpr(scores: Sequence[float], labels: Sequence[int], fpr: float = 0.1, mode: str = "le") -> float:
    """True-positive rate at false-positive rate ``fpr`` (see the module docstring for ``mode``)."""
    require("sklearn", "Membership-inference TPR at FPR")
    from sklearn.metrics import roc_curve

    if not 0.0 <= fpr <= 1.0:
        raise ValueError(f"fpr must be in [0, 1], got {fpr}.")
    if mode not in TPR_MODES:
        raise ValueError(f"mode must be one of {TPR_MODES}, got {mode!r}.")
    s, y = _checked(scores, labels)
    fprs, tprs, _ = roc_curve(y, s, drop_intermediate=False)
    if mode == "nearest":
        return float(tprs[int(np.argmin(np.abs(fprs - fpr)))])
    return float(tprs[fprs <= fpr + 1e-12].max())


def membership_metrics(
    scores: Sequence[float], labels: Sequence[int], fpr: float = 0.1, tpr_mode: str = "le"
) -> dict[str, float]:
    """``{"auroc", "tpr_at_fpr", "fpr"}`` for one attack's scores."""
    return {"auroc": auroc(scores, labels), "tpr_at_fpr": tpr_at_fpr(scores, labels, fpr, tpr_mode), "fpr": fpr}


def _pair_wins(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``W[i, j]`` = 1 if member i outscores non-member j, 0.5 on a tie, else 0 (AUROC is the mean of ``W``)."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    return (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])


def auroc_difference(
    scores_a: Sequence[float],
    scores_b: Sequence[float],
    labels: Sequence[int],
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """AUROC(a) - AUROC(b) on the same texts, with a paired percentile-bootstrap confidence interval.

    Each resample draws members and non-members with replacement (class sizes kept, so AUROC stays defined) and
    scores both attacks on that same resample, so the interval reflects the attacks' correlation over texts.
    AUROC is the Mann-Whitney statistic, so a resample's AUROC is ``c_pos @ W @ c_neg / (n_pos * n_neg)`` with
    ``c`` the draw counts: one matrix product per attack for all resamples.

    Returns:
        ``{"difference", "low", "high", "level", "n_boot"}``.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}.")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}.")
    a, y = _checked(scores_a, labels)
    b, _ = _checked(scores_b, labels)
    wa, wb = _pair_wins(a, y), _pair_wins(b, y)
    n_pos, n_neg = wa.shape
    rng = np.random.default_rng(seed)
    c_pos = rng.multinomial(n_pos, np.full(n_pos, 1.0 / n_pos), size=n_boot).astype(float)
    c_neg = rng.multinomial(n_neg, np.full(n_neg, 1.0 / n_neg), size=n_boot).astype(float)
    diff = (((c_pos @ (wa - wb)) * c_neg).sum(axis=1)) / (n_pos * n_neg)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(diff, [tail, 100 - tail])
    return {"difference": float(wa.mean() - wb.mean()), "low": float(low), "high": float(high), "level": level,
            "n_boot": n_boot}
