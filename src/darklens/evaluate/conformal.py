"""Calibrated decisions from anomaly scores: split-conformal p-values, flags, BH control.

A run stores the scores of held-out normal images (``calibration.json``: normals never trained
or validated on). For a new image with score ``s`` the split-conformal p-value is

    p = (1 + #{calibration scores >= s}) / (n_cal + 1),

which, when the image is normal and exchangeable with the calibration normals, is
super-uniform: P(p <= a) <= a for every a. Flagging ``p <= fpr`` therefore holds the
false-positive rate at ``fpr`` on average over calibration draws; the rate reached with one
fixed calibration set is ``floor(fpr (n_cal + 1)) / (n_cal + 1)`` on average, with a spread
that shrinks as ``n_cal`` grows (``realised_fpr_band``). Over a whole folder,
Benjamini-Hochberg on those p-values controls the false discovery rate instead
(``benjamini_hochberg``).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import false_discovery_control


def conformal_p_values(scores: np.ndarray, calibration: np.ndarray) -> np.ndarray:
    """Split-conformal p-values (see the module docstring); NaN where the score is NaN."""
    cal = np.sort(np.asarray(calibration, dtype=np.float64))
    if cal.size == 0 or not np.isfinite(cal).all():
        raise ValueError("conformal p-values need finite calibration scores")
    s = np.asarray(scores, dtype=np.float64)
    at_least = cal.size - np.searchsorted(cal, s, side="left")  # #{cal >= s}
    p = (1.0 + at_least) / (cal.size + 1.0)
    return np.where(np.isnan(s), np.nan, p)


def flags_at_fpr(p_values: np.ndarray, fpr: float) -> np.ndarray:
    """True where an image is flagged anomalous at false-positive rate ``fpr`` (p <= fpr)."""
    check_rate(fpr, "fpr")
    p = np.asarray(p_values, dtype=np.float64)
    return np.where(np.isnan(p), False, p <= fpr)


def benjamini_hochberg(p_values: np.ndarray, fdr: float) -> tuple[np.ndarray, np.ndarray]:
    """BH-adjusted p-values (q-values; NaN stays NaN) and the discoveries ``q <= fdr``."""
    check_rate(fdr, "fdr")
    p = np.asarray(p_values, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        q[ok] = false_discovery_control(p[ok], method="bh")
    return q, np.where(ok, q <= fdr, False)


def check_rate(rate: float, name: str) -> None:
    """A ``ValueError`` unless ``0 < rate < 1``."""
    if not (0.0 < float(rate) < 1.0):
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {rate}")


def expected_fpr(fpr: float, n_cal: int) -> float:
    """The mean false-positive rate of ``p <= fpr`` with ``n_cal`` calibration scores."""
    return math.floor(fpr * (n_cal + 1)) / (n_cal + 1)


def realised_fpr_band(fpr: float, n_cal: int, n_test: int, sigmas: float = 4.0
                      ) -> tuple[float, float, float]:
    """(low, expected, high): where the false-positive rate on ``n_test`` fresh normals falls.

    With one calibration set of ``n_cal`` normals, the number of flagged fresh normals is
    beta-binomial (the conditional rate is Beta(k, n_cal + 1 - k), k = floor(fpr (n_cal + 1))),
    so its standard deviation over calibration and test draws together is
    sqrt(e (1 - e) / n_test * (n_cal + 1 + n_test) / (n_cal + 2)) with e the expected rate:
    the binomial error of the test set, widened by that of the calibration set.
    """
    e = expected_fpr(fpr, n_cal)
    sd = math.sqrt(e * (1 - e) / n_test * (n_cal + 1 + n_test) / (n_cal + 2))
    return max(0.0, e - sigmas * sd), e, min(1.0, e + sigmas * sd)
