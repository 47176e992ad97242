"""Coverage and accuracy metrics on cases with a known answer."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import r2_score

from darklens.evaluate.regression_metrics import (
    NOMINAL_68,
    NOMINAL_95,
    coverage,
    metrics_per_target,
    regression_metrics,
)

N = 40_000


def _case(scale: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    mean = rng.uniform(-1, 1, N)
    sigma = rng.uniform(0.1, 0.5, N)
    truth = mean + sigma * rng.standard_normal(N)  # truth ~ N(mean, sigma)
    return truth, mean, sigma * scale


def test_calibrated_gaussian_covers_at_nominal_rates():
    truth, mean, sigma = _case(1.0)
    m = regression_metrics(truth, mean, sigma)
    assert NOMINAL_68 == pytest.approx(0.6827, abs=1e-4)
    assert NOMINAL_95 == pytest.approx(0.95, abs=1e-4)
    # binomial standard errors at N = 40000: 0.0023 and 0.0011
    assert m["coverage_68"] == pytest.approx(0.6827, abs=0.01)
    assert m["coverage_95"] == pytest.approx(0.95, abs=0.006)


def test_too_small_sigma_undercovers_and_too_large_overcovers():
    small = regression_metrics(*_case(0.5))
    assert small["coverage_68"] == pytest.approx(0.383, abs=0.015)  # P(|z| < 0.5)
    assert small["coverage_95"] < 0.7
    large = regression_metrics(*_case(2.0))
    assert large["coverage_68"] > 0.93


def test_accuracy_metrics_against_references():
    truth, mean, sigma = _case(1.0, seed=1)
    pred = mean + 0.3  # a bias
    m = regression_metrics(truth, pred, sigma)
    err = pred - truth
    assert m["bias"] == pytest.approx(err.mean())
    assert m["mae"] == pytest.approx(np.abs(err).mean())
    assert m["rmse"] == pytest.approx(np.sqrt((err**2).mean()))
    assert m["r2"] == pytest.approx(r2_score(truth, pred))
    assert m["n"] == N


def test_edge_cases_and_per_target():
    assert coverage(np.array([0.0, 1.0]), np.zeros(2), np.array([0.5, 0.5]), 1.0) == 0.5
    with pytest.raises(ValueError):
        regression_metrics(np.zeros(3), np.zeros(2), np.ones(3))
    with pytest.raises(ValueError):
        regression_metrics(np.zeros(0), np.zeros(0), np.zeros(0))
    assert np.isnan(regression_metrics(np.ones(3), np.ones(3), np.ones(3))["r2"])
    truth = np.stack([np.arange(5.0), 10 * np.arange(5.0)], axis=1)
    out = metrics_per_target(["a", "b"], truth, truth + [[0.1, 1.0]], np.ones_like(truth))
    assert out["a"]["mae"] == pytest.approx(0.1) and out["b"]["mae"] == pytest.approx(1.0)
