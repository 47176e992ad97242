"""Population-level inference: known answers, calibration over many trials, 1/sqrt(N) shrinkage.

Synthetic lenses: true values y_i; a measurement x_i = y_i + sigma_i * noise; the "network"
reports the exact posterior under the training prior p_train (for a Gaussian training prior
N(m0, s0^2): a Gaussian with precision 1/sigma^2 + 1/s0^2), which is what a well-trained
Gaussian-NLL network approximates. The truth lies off the prior's centre, so forgetting to
divide out the prior gives biased, over-confident answers.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.stats import norm

from darklens.evaluate.population import (
    infer_population_mean,
    infer_shared_value,
    lens_log_evidence,
)
from darklens.models.training_prior import TrainingPrior

M0, S0 = 0.0, 1.0  # Gaussian training prior
PRIOR = TrainingPrior.gaussian(M0, S0)


def network_posteriors(y: np.ndarray, sigma: np.ndarray, rng: np.random.Generator):
    """Exact Gaussian posteriors under the training prior N(M0, S0^2) from x = y + noise."""
    x = y + sigma * rng.standard_normal(y.shape)
    prec = 1 / sigma**2 + 1 / S0**2
    return (x / sigma**2 + M0 / S0**2) / prec, np.sqrt(1 / prec), x


@pytest.mark.parametrize("prior", [TrainingPrior.gaussian(0.3, 1.2),
                                   TrainingPrior.uniform(-2.0, 2.5)])
def test_lens_evidence_matches_numerical_integral(prior):
    mu, sigma = np.array([0.4, -1.0]), np.array([0.3, 0.6])
    got = lens_log_evidence(mu, sigma, prior, np.array([0.2, 0.5]), np.array([0.4, 0.0]))
    for i in range(2):
        def f(y, i=i):
            return norm.pdf(y, mu[i], sigma[i]) * norm.pdf(y, 0.2, 0.4) / np.exp(prior.logpdf(y))
        lo, hi = (-15, 15) if prior.kind == "gaussian" else (prior.low, prior.high)
        assert got[i, 0] == pytest.approx(np.log(quad(f, lo, hi, limit=200)[0]), abs=1e-6)
        assert got[i, 1] == pytest.approx(norm.logpdf(0.5, mu[i], sigma[i])
                                          - prior.logpdf(0.5), abs=1e-9)


def test_shared_value_known_closed_form():
    # Dividing out the Gaussian prior recovers the plain likelihood: theta | x ~ N(mean x,
    # sigma^2 / N) for equal sigmas.
    rng = np.random.default_rng(0)
    sigma = np.full(40, 0.5)
    mu, s, x = network_posteriors(np.full(40, 0.8), sigma, rng)
    res = infer_shared_value(mu, s, PRIOR)
    assert res.mean == pytest.approx(x.mean(), abs=1e-4)
    assert res.std == pytest.approx(0.5 / np.sqrt(40), rel=1e-3)
    lo, hi = res.interval_68
    assert lo == pytest.approx(x.mean() - 0.5 / np.sqrt(40), abs=1e-3)
    assert hi == pytest.approx(x.mean() + 0.5 / np.sqrt(40), abs=1e-3)
    # a histogram of training samples of the same prior gives nearly the same answer
    hist = TrainingPrior.from_samples(rng.normal(M0, S0, 200_000), bins=80)
    assert infer_shared_value(mu, s, hist).mean == pytest.approx(res.mean, abs=0.3 * res.std)


def _coverage(trials: int, n: int, infer, truth: float, scatter: float, seed: int):
    rng = np.random.default_rng(seed)
    hits, naive_hits, widths = 0, 0, []
    for _ in range(trials):
        sigma = rng.uniform(0.3, 0.7, n)
        y = truth + scatter * rng.standard_normal(n)
        mu, s, _ = network_posteriors(y, sigma, rng)
        res = infer(mu, s)
        lo, hi = res.interval_68
        hits += lo <= truth <= hi
        widths.append(hi - lo)
        # naive: multiply the per-lens posteriors (counts the training prior n times)
        w = 1 / s**2
        m_naive, sd_naive = np.sum(w * mu) / w.sum(), 1 / np.sqrt(w.sum())
        naive_hits += abs(m_naive - truth) <= sd_naive
    return hits / trials, naive_hits / trials, float(np.mean(widths))


def test_shared_value_interval_covers_at_its_rate_and_shrinks():
    def infer(mu, s):
        return infer_shared_value(mu, s, PRIOR, n_grid=801)

    cov, naive, width16 = _coverage(300, 16, infer, truth=1.2, scatter=0.0, seed=1)
    # 300 trials: binomial standard error 0.027 around 0.683
    assert 0.60 <= cov <= 0.77
    assert naive < 0.3  # without dividing out the prior the interval misses the truth
    _, _, width64 = _coverage(150, 64, infer, truth=1.2, scatter=0.0, seed=2)
    assert width16 / width64 == pytest.approx(2.0, rel=0.12)  # 1/sqrt(N)


def test_population_mean_with_scatter_covers_at_its_rate():
    def infer(mu, s):
        return infer_population_mean(mu, s, PRIOR, scatter_max=1.0, n_grid=201, n_scatter=30)

    cov, naive, width = _coverage(150, 30, infer, truth=0.7, scatter=0.3, seed=3)
    assert 0.57 <= cov <= 0.79  # 150 trials: standard error 0.038
    assert naive < 0.45
    known = infer_population_mean(*network_posteriors(np.full(30, 0.7), np.full(30, 0.5),
                                                      np.random.default_rng(4))[:2],
                                  PRIOR, scatter=0.0)
    assert known.std < width  # knowing there is no scatter gives a narrower interval


def test_uniform_prior_shared_value_stays_in_support():
    prior = TrainingPrior.uniform(-24.0, -22.0)  # e.g. log10 axion mass
    rng = np.random.default_rng(5)
    mu = -22.05 + 0.3 * rng.standard_normal(50)
    res = infer_shared_value(mu, np.full(50, 0.3), prior)
    assert -24.0 <= res.interval_95[0] and res.interval_95[1] <= -22.0
    assert res.to_dict()["n_lenses"] == 50


def test_bad_input():
    with pytest.raises(ValueError):
        infer_shared_value(np.zeros(3), np.array([1.0, 0.0, 1.0]), PRIOR)
    with pytest.raises(ValueError):
        infer_shared_value(np.zeros(3), np.ones(2), PRIOR)
    with pytest.raises(ValueError):
        TrainingPrior.uniform(1.0, 1.0)
