"""Accuracy and calibration of regression predictions with Gaussian uncertainties.

Per target: ``mae``, ``rmse``, ``r2`` (1 - SS_res / SS_tot, via scikit-learn), ``bias`` (mean of
prediction - truth), ``coverage_68`` and ``coverage_95`` (fraction of truths inside mean +- 1
sigma and mean +- 1.96 sigma; a calibrated Gaussian gives 0.683 and 0.950), and
``mean_sigma`` (the average stated uncertainty, to compare with the RMSE).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

Z_68 = 1.0  # +- 1 sigma holds erf(1/sqrt 2) = 0.6827 of a Gaussian
Z_95 = 1.959963984540054
NOMINAL_68 = math.erf(Z_68 / math.sqrt(2))
NOMINAL_95 = math.erf(Z_95 / math.sqrt(2))


def coverage(truth: np.ndarray, mean: np.ndarray, sigma: np.ndarray, z: float) -> float:
    """Fraction of ``truth`` within ``mean +- z * sigma``."""
    truth, mean, sigma = (np.asarray(a, dtype=np.float64) for a in (truth, mean, sigma))
    if truth.size == 0:
        return float("nan")
    return float(np.mean(np.abs(truth - mean) <= z * sigma))


def regression_metrics(truth: np.ndarray, mean: np.ndarray,
                       sigma: np.ndarray) -> dict[str, float]:
    """The metrics of one target (1-D arrays of equal length)."""
    truth, mean, sigma = (np.asarray(a, dtype=np.float64).reshape(-1)
                          for a in (truth, mean, sigma))
    if not truth.shape == mean.shape == sigma.shape:
        raise ValueError("truth, mean and sigma must have the same length")
    n = truth.size
    if n == 0:
        raise ValueError("no predictions to score")
    r2 = float(r2_score(truth, mean)) if n > 1 and np.ptp(truth) > 0 else float("nan")
    return {
        "n": int(n),
        "mae": float(mean_absolute_error(truth, mean)),
        "rmse": float(math.sqrt(mean_squared_error(truth, mean))),
        "r2": r2,
        "bias": float(np.mean(mean - truth)),
        "coverage_68": coverage(truth, mean, sigma, Z_68),
        "coverage_95": coverage(truth, mean, sigma, Z_95),
        "mean_sigma": float(np.mean(sigma)),
    }


def metrics_per_target(targets: Sequence[str], truth: np.ndarray, mean: np.ndarray,
                       sigma: np.ndarray) -> dict[str, dict[str, float]]:
    """``regression_metrics`` for each column of (N, T) arrays, keyed by target name."""
    truth, mean, sigma = (np.asarray(a, dtype=np.float64).reshape(-1, len(targets))
                          for a in (truth, mean, sigma))
    return {t: regression_metrics(truth[:, j], mean[:, j], sigma[:, j])
            for j, t in enumerate(targets)}
