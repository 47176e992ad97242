"""Detectability curve: AUROC of each anomaly class in bins of the substructure's signal.

The simulator records for every image ``substructure_chi2``, the chi-square between the image
with and without its substructure (in units of the noise): how strongly the substructure shows
in the pixels. Binning an anomaly class by it and computing the AUROC of each bin against all
normal test images shows where a detector stops seeing substructure (AUROC falling to 0.5 as
chi2 falls).

Bin edges are quantiles of the anomaly class's chi2 over a reference set (e.g. every image of
that class in the data set), so runs with different test splits share the same bins.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score


def quantile_edges(values: np.ndarray, n_bins: int) -> np.ndarray:
    """``n_bins + 1`` edges at equal quantiles of the finite ``values`` (duplicates removed)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return np.zeros(0)
    return np.unique(np.quantile(v, np.linspace(0.0, 1.0, n_bins + 1)))


def detectability(scores: np.ndarray, labels: np.ndarray, chi2: np.ndarray,
                  class_names: Sequence[str], normal: str = "no_sub",
                  edges: dict[str, np.ndarray] | None = None,
                  n_bins: int = 5, min_per_bin: int = 5) -> dict[str, list[dict[str, float]]]:
    """Per anomaly class, one row per chi2 bin: ``lo``, ``hi``, ``median_chi2``, ``n``, ``auroc``.

    ``edges`` (per class) fixes the bins; otherwise they are quantiles of the class's chi2 in
    this set. Each bin's anomalies are scored against every normal image; bins with fewer than
    ``min_per_bin`` anomalies get ``auroc`` NaN. Images with a non-finite chi2 are left out.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    chi2 = np.asarray(chi2, dtype=np.float64)
    names = list(class_names)
    normal_id = names.index(normal)
    normal_scores = scores[labels == normal_id]
    out: dict[str, list[dict[str, float]]] = {}
    for cid, name in enumerate(names):
        if cid == normal_id or not (labels == cid).any() or normal_scores.size == 0:
            continue
        sel = (labels == cid) & np.isfinite(chi2)
        e = edges.get(name) if edges is not None else None
        e = quantile_edges(chi2[sel], n_bins) if e is None else np.asarray(e, dtype=np.float64)
        rows = []
        for k in range(len(e) - 1):
            last = k == len(e) - 2
            inside = sel & (chi2 >= e[k]) & ((chi2 <= e[k + 1]) if last else (chi2 < e[k + 1]))
            n = int(inside.sum())
            auroc = float("nan")
            if n >= min_per_bin:
                y = np.r_[np.zeros(normal_scores.size), np.ones(n)]
                auroc = float(roc_auc_score(y, np.r_[normal_scores, scores[inside]]))
            rows.append({"lo": float(e[k]), "hi": float(e[k + 1]),
                         "median_chi2": float(np.median(chi2[inside])) if n else float("nan"),
                         "n": n, "auroc": auroc})
        out[name] = rows
    return out
