"""SBC, TARP, coverage by truth and identifiability on posteriors whose calibration is known."""

from __future__ import annotations

import numpy as np
import pytest

from darklens.evaluate.calibration import calibration_report, rank_uniformity, sbc_ranks
from darklens.evaluate.identifiability import identifiability


def _exact(rng, n=1500, draws=200, width=1.0):
    """Truths from a uniform prior; each lens's exact posterior is N(truth + noise, s^2)
    truncated to nothing (the prior is wide): posterior draws given the observation."""
    truth = rng.uniform(0, 10, n)
    obs = truth + width * rng.normal(size=n)
    samples = obs[:, None] + width * rng.normal(size=(n, draws))
    return samples, truth


def test_calibrated_posteriors_pass_and_overconfident_fail():
    rng = np.random.default_rng(0)
    samples, truth = _exact(rng)
    inside = (truth > 3) & (truth < 7)  # away from the prior's edges, where N() is exact
    samples, truth = samples[inside], truth[inside]
    rep = calibration_report(samples[..., None], truth[:, None], ["y"], [[-5, 15]], seed=1)
    t = rep["targets"]["y"]
    assert t["sbc"]["p_value"] > 0.01
    assert t["tarp"]["ecp_68"] == pytest.approx(0.68, abs=0.05)
    assert t["tarp"]["ecp_95"] == pytest.approx(0.95, abs=0.03)
    assert all(abs(c - 0.68) < 0.12 for c in t["coverage_by_truth"]["coverage_68"])
    # half as wide as they should be: every test fails
    centre = samples.mean(1, keepdims=True)
    narrow = centre + 0.5 * (samples - centre)
    bad = calibration_report(narrow[..., None], truth[:, None], ["y"], [[-5, 15]], seed=1)
    b = bad["targets"]["y"]
    assert b["sbc"]["p_value"] < 1e-6
    assert b["tarp"]["ecp_68"] < 0.6 and b["coverage_by_truth"]["central_68"] < 0.45


def test_biased_posteriors_fail_sbc():
    rng = np.random.default_rng(1)
    samples, truth = _exact(rng)
    ranks = sbc_ranks(samples + 0.7, truth)
    assert rank_uniformity(ranks, samples.shape[1])["p_value"] < 1e-6


def test_joint_tarp_detects_a_wrong_correlation():
    """Two targets with correct marginals but independent draws where the truth correlates:
    the joint TARP moves from the diagonal, per-target TARPs do not (TARP is a weak test:
    the margins are small, and the seeds fixed)."""
    rng = np.random.default_rng(1)
    n, draws = 2000, 200
    z = rng.normal(size=(n, 1))
    obs = 5 + np.concatenate([z, z], 1)
    truth = obs + np.stack([rng.normal(size=n)] * 2, 1) * 0.5  # errors shared
    good = obs[:, None, :] + np.repeat(rng.normal(size=(n, draws, 1)), 2, axis=2) * 0.5
    bad = obs[:, None, :] + rng.normal(size=(n, draws, 2)) * 0.5
    ok = calibration_report(good, truth, ["a", "b"], [[0, 10], [0, 10]], seed=3)
    wrong = calibration_report(bad, truth, ["a", "b"], [[0, 10], [0, 10]], seed=3)
    assert ok["tarp_joint"]["max_deviation"] < 0.04
    assert wrong["tarp_joint"]["max_deviation"] > 0.06
    assert wrong["targets"]["a"]["tarp"]["max_deviation"] < 0.04


def test_identifiability_finds_the_measurable_range():
    """Posteriors tight below 5 and as wide as the prior above: the range is the lower half."""
    rng = np.random.default_rng(3)
    truth = rng.uniform(0, 10, 2000)
    width = np.where(truth < 5, 0.2, 10 / 12**0.5)
    samples = truth[:, None] + width[:, None] * rng.normal(size=(2000, 100))
    ident = identifiability(samples, truth, prior_var=100 / 12, n_bins=10)
    lo, hi = ident["measurable_range"]
    assert lo == pytest.approx(0, abs=0.05) and hi == pytest.approx(5, abs=0.05)
    assert ident["contraction"][0] > 0.95 and abs(ident["contraction"][-1]) < 0.15
