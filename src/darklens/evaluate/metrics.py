"""Anomaly-detection metrics per anomaly class against the normal class (scikit-learn).

``anomaly_metrics`` returns::

    {"auroc": {"all": .., "cdm": .., "vortex": ..}, "auprc": {...},
     "tpr_at_fpr_0.01": {...}, "n": {"no_sub": .., "cdm": .., "vortex": .., "all": ..}}

Each anomaly class is scored against the normal images alone; "all" pools every anomaly class.
Scores: higher = more anomalous; anomalies are the positive class. AUPRC is average precision
(its value depends on the class balance of the test set: compare it only at equal balance).
TPR at 1% FPR is the largest true-positive rate on the ROC curve at a false-positive rate of at
most 0.01 (no interpolation).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from darklens.data.lensdata import CLASSES


def tpr_at_fpr(y_true: np.ndarray, scores: np.ndarray, max_fpr: float = 0.01) -> float:
    """Largest TPR reached at FPR <= ``max_fpr``."""
    fpr, tpr, _ = roc_curve(y_true, scores)
    ok = fpr <= max_fpr + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def binary_metrics(y_true: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """AUROC, AUPRC and TPR at 1% FPR for one positive (anomaly) class."""
    return {
        "auroc": float(roc_auc_score(y_true, scores)),
        "auprc": float(average_precision_score(y_true, scores)),
        "tpr_at_fpr_0.01": tpr_at_fpr(y_true, scores, 0.01),
    }


def anomaly_metrics(scores: np.ndarray, labels: np.ndarray,
                    class_names: Sequence[str] = CLASSES,
                    normal: str = "no_sub") -> dict[str, dict[str, float | int]]:
    """Metrics of every anomaly class present (and "all") against the ``normal`` class."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} differ in shape")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinity")
    normal_id = list(class_names).index(normal)
    is_normal = labels == normal_id
    if not is_normal.any():
        raise ValueError(f"no images of the normal class {normal!r}")
    present = [c for i, c in enumerate(class_names) if i != normal_id and (labels == i).any()]
    if not present:
        raise ValueError("no anomalous images to evaluate against")
    out: dict[str, dict[str, float | int]] = {"auroc": {}, "auprc": {}, "tpr_at_fpr_0.01": {},
                                              "n": {normal: int(is_normal.sum())}}
    groups = {"all": labels != normal_id}
    groups.update({c: labels == list(class_names).index(c) for c in present})
    for key, positive in groups.items():
        keep = is_normal | positive
        for metric, value in binary_metrics(positive[keep].astype(int), scores[keep]).items():
            out[metric][key] = value
        out["n"][key] = int(positive.sum())
    return out
