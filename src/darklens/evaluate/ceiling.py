"""What the images allow: AUROC of oracles that know the true smooth lens, per anomaly class.

Every simulated anomaly records ``substructure_chi2`` = lambda, the chi-square between its
noiseless image and the same lens without substructure, in units of its pixel noise. Two
oracles follow from it exactly, with no fitting and no learning:

- **chi-square oracle** (knows the true smooth model and the noise, not the substructure):
  scores the whole image's chi-square against the smooth model. A normal image gives a
  chi-square with N degrees of freedom (N pixels), an anomaly a non-central one with
  non-centrality lambda. A detector that localises can beat it.
- **matched-filter ceiling** (knows the smooth model *and* the substructure's signal): the
  Neyman-Pearson test of each anomaly against the same template on a normal image;
  its statistic is N(sqrt(lambda), 1) against N(0, 1), so the pair is ranked correctly with
  probability Phi(sqrt(lambda / 2)). No detector can do better on average: this is the
  ceiling every AUROC reads as a fraction of.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import roc_auc_score


def matched_filter_auroc(lam: np.ndarray) -> float:
    """Mean over anomalies of Phi(sqrt(lambda / 2))."""
    lam = np.clip(np.asarray(lam, dtype=np.float64), 0, None)
    return float(np.mean([0.5 * math.erfc(-math.sqrt(v / 2) / math.sqrt(2)) for v in lam]))


def chi2_oracle_auroc(lam: np.ndarray, n_pixels: int, n_normal: int = 20000,
                      seed: int = 0) -> float:
    """AUROC of the whole-image chi-square against the true smooth model (simulated draws)."""
    rng = np.random.default_rng(seed)
    lam = np.clip(np.asarray(lam, dtype=np.float64), 1e-12, None)
    normal = rng.chisquare(n_pixels, n_normal)
    anomal = rng.noncentral_chisquare(n_pixels, lam)
    y = np.r_[np.zeros(n_normal), np.ones(len(lam))]
    return float(roc_auc_score(y, np.r_[normal, anomal]))


def ceiling_table(labels: np.ndarray, class_names: tuple[str, ...] | list[str],
                  substructure_chi2: np.ndarray, n_pixels: int, normal: str = "no_sub",
                  seed: int = 0) -> dict[str, dict[str, float]]:
    """Both oracles for every anomaly class and for all anomalies together.

    Returns ``{"ceiling": {class: auroc, ..., "all": auroc}, "chi2_oracle": {...}}``. Images
    whose lambda is NaN (not simulated with it) are left out.
    """
    labels = np.asarray(labels)
    lam = np.asarray(substructure_chi2, dtype=np.float64)
    normal_id = list(class_names).index(normal)
    out: dict[str, dict[str, float]] = {"ceiling": {}, "chi2_oracle": {}}
    groups = {name: labels == i for i, name in enumerate(class_names) if i != normal_id}
    groups["all"] = labels != normal_id
    for name, mask in groups.items():
        values = lam[mask & np.isfinite(lam)]
        if values.size == 0:
            continue
        out["ceiling"][name] = matched_filter_auroc(values)
        out["chi2_oracle"][name] = chi2_oracle_auroc(values, n_pixels, seed=seed)
    return out
