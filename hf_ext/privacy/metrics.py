"""Membership-inference metrics: AUROC and TPR at a fixed FPR, through scikit-learn's ROC curve.

Scores follow one convention everywhere in :mod:`hf_ext.privacy`: higher = more likely a member (label 1).

TPR at a target FPR has two readings in the literature, and they differ on small sets:

* ``"le"`` (our default): the largest TPR over ROC operating points whose FPR is <= the target. This is an
  achievable, conservative operating point (the attacker never exceeds the FPR budget), as in Carlini et al. 2022.
* ``"nearest"``: the TPR of the ROC point whose FPR is closest to the target (ties: the first such point of
  scikit-learn's curve, i.e. the lower threshold index). This is what the official SaMIA evaluation script reports;
  the point may lie above the target FPR.
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
