"""Split-conformal p-values, FPR flags, Benjamini-Hochberg and the realised-FPR band."""

from __future__ import annotations

import numpy as np
import pytest

from darklens.evaluate.conformal import (
    benjamini_hochberg,
    conformal_p_values,
    expected_fpr,
    flags_at_fpr,
    realised_fpr_band,
)


def test_p_values_count_calibration_scores_at_least_as_high():
    cal = np.array([3.0, 1.0, 2.0, 2.0])
    p = conformal_p_values(np.array([0.0, 2.0, 2.5, 9.0, np.nan]), cal)
    # (1 + #{cal >= s}) / (n + 1)
    np.testing.assert_allclose(p[:4], [5 / 5, 4 / 5, 2 / 5, 1 / 5])
    assert np.isnan(p[4])
    assert flags_at_fpr(p, 0.2).tolist() == [False, False, False, True, False]
    with pytest.raises(ValueError):
        conformal_p_values(np.ones(2), np.array([]))
    with pytest.raises(ValueError):
        flags_at_fpr(p, 0.0)


def test_p_values_of_exchangeable_normals_are_super_uniform():
    rng = np.random.default_rng(0)
    hits = {0.01: 0, 0.05: 0, 0.1: 0}
    trials = 400
    for _ in range(trials):  # fresh calibration set each time: the marginal guarantee
        cal, new = rng.normal(size=99), rng.normal(size=50)
        p = conformal_p_values(new, cal)
        for a in hits:
            hits[a] += int((p <= a).sum())
    for a, h in hits.items():
        rate = h / (trials * 50)
        assert abs(rate - expected_fpr(a, 99)) < 4 * np.sqrt(a / (trials * 50) * 2)


def test_benjamini_hochberg_matches_the_step_up_rule():
    p = np.array([0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, np.nan])
    q, found = benjamini_hochberg(p, 0.05)
    m = 8
    order = np.argsort(p[:m])
    passed = [k for k in range(1, m + 1) if p[order[k - 1]] <= 0.05 * k / m]
    expected = np.zeros(m, bool)
    expected[order[: max(passed)]] = True
    assert found[:m].tolist() == expected.tolist() and not found[m] and np.isnan(q[m])


def test_band_widens_with_a_small_calibration_set():
    low, e, high = realised_fpr_band(0.05, 99, 1000)
    assert e == expected_fpr(0.05, 99) == 5 / 100 and low < e < high
    _, _, high_big = realised_fpr_band(0.05, 9999, 1000)
    assert high - e > high_big - expected_fpr(0.05, 9999)
