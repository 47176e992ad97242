"""Population inference from per-lens densities: calibrated pulls on synthetic lenses whose
posteriors are exact, agreement with the Gaussian closed form, and "not constrained" where
the lenses carry no information (a plateau cut at the prior's edge)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from darklens.evaluate.hierarchical import infer_mean_scatter, infer_shared
from darklens.evaluate.population import infer_shared_value
from darklens.models.training_prior import TrainingPrior

GRID = np.linspace(0.0, 1.0, 201)
PRIOR = TrainingPrior.uniform(0.0, 1.0)


def _lenses(rng, y, s=0.08, plateau=None):
    """Exact posteriors (uniform training prior on [0, 1]) of lenses with true values y,
    measured with noise s; above ``plateau`` a lens says only "y > plateau"."""
    obs = y + s * rng.normal(size=y.size)
    d = norm.pdf(GRID[None], obs[:, None], s)
    if plateau is not None:
        d[y > plateau] = (GRID >= plateau) * 1.0
    return d / np.trapezoid(d, GRID, axis=1)[:, None]


@pytest.mark.slow
def test_population_mean_pulls_are_calibrated():
    """60 populations of 50 lenses, y ~ N(m, tau) truncated to [0, 1], m and tau drawn from
    another distribution than the training prior: pulls have mean ~0 and std ~1."""
    rng = np.random.default_rng(0)
    pulls, covered = [], 0
    for _ in range(60):
        m, tau = rng.uniform(0.2, 0.8), rng.uniform(0.03, 0.15)
        y = norm.ppf(rng.uniform(norm.cdf(0, m, tau), norm.cdf(1, m, tau), 50), m, tau)
        res = infer_mean_scatter(GRID, _lenses(rng, y), PRIOR, parameter="m")
        pulls.append((res.result.mean - m) / res.result.std)
        covered += res.result.interval_68[0] <= m <= res.result.interval_68[1]
        assert res.constrained
    assert abs(np.mean(pulls)) < 0.3 and 0.75 < np.std(pulls) < 1.3
    assert 0.55 <= covered / 60 <= 0.82


def test_shared_value_matches_the_gaussian_closed_form():
    rng = np.random.default_rng(1)
    dens = _lenses(rng, np.full(30, 0.4))
    res = infer_shared(GRID, dens, PRIOR)
    # the same lenses as Gaussians (their mean and sigma, far from the edges: untruncated)
    mu = np.trapezoid(dens * GRID, GRID, axis=1)
    sd = np.sqrt(np.trapezoid(dens * (GRID - mu[:, None]) ** 2, GRID, axis=1))
    ref = infer_shared_value(mu, sd, PRIOR)
    assert res.result.mean == pytest.approx(ref.mean, abs=0.1 * ref.std)
    assert res.result.std == pytest.approx(ref.std, rel=0.05)
    assert res.constrained and res.limit is None


def test_plateau_gives_not_constrained_with_a_lower_limit():
    """Lenses above 0.6 carry no information: a population there is 'not constrained', with
    a lower limit near 0.6, and its 95% interval holds the truth; below, it is measured."""
    rng = np.random.default_rng(2)
    for model in ("shared", "mean"):
        y = np.full(200, 0.8) if model == "shared" else np.clip(0.8 + 0.05 * rng.normal(
            size=200), 0, 1)
        dens = _lenses(rng, y, plateau=0.6)
        res = (infer_shared(GRID, dens, PRIOR) if model == "shared"
               else infer_mean_scatter(GRID, dens, PRIOR))
        assert not res.constrained
        assert res.limit is not None and res.limit["lower"] == pytest.approx(0.62, abs=0.06)
        assert res.result.interval_95[0] <= 0.8 <= res.result.interval_95[1]
    low = infer_shared(GRID, _lenses(rng, np.full(50, 0.3), plateau=0.6), PRIOR)
    assert low.constrained and abs(low.result.mean - 0.3) < 3 * low.result.std


def test_bad_densities_are_refused():
    with pytest.raises(ValueError, match="one density row"):
        infer_shared(GRID, np.ones((3, 10)), PRIOR)
    with pytest.raises(ValueError, match="not all zero"):
        infer_shared(GRID, np.zeros((2, GRID.size)), PRIOR)


def test_dividing_out_the_learned_prior_cancels_a_shared_tilt():
    """A network that learned nothing returns its learned marginal p_hat for every lens,
    slightly tilted against the nominal uniform prior. Divided by the nominal prior, 200 such
    lenses pile the answer against the upper edge; divided by p_hat (the mean posterior, what
    ``effective_prior`` records), 'not constrained' and the whole range."""
    p_hat = 1.0 + 0.1 * (GRID - 0.5)  # a 10% tilt
    p_hat /= np.trapezoid(p_hat, GRID)
    dens = np.tile(p_hat, (200, 1))
    nominal = infer_shared(GRID, dens, PRIOR)
    assert nominal.result.interval_95[0] > 0.8  # pulled to the edge
    half = 0.5 * (GRID[1] - GRID[0])
    edges = np.concatenate([[-half], 0.5 * (GRID[1:] + GRID[:-1]), [1 + half]])
    learned = TrainingPrior("histogram", low=edges[0], high=edges[-1], edges=tuple(edges),
                            density=tuple(p_hat))
    res = infer_mean_scatter(GRID, dens, learned)
    assert not res.constrained
    assert res.result.interval_95[0] < 0.1 and res.result.interval_95[1] > 0.9
