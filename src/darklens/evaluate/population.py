"""Population-level inference from many lenses' predictions, dividing out the training prior.

A network trained on simulations whose target y was drawn from a *training prior* p_train(y)
returns, for lens i, an approximate posterior q_i(y) = N(y; mu_i, sigma_i^2) that includes
p_train. To infer a quantity lambda shared by a population of N lenses we must divide it out
(hierarchical inference; Wagner-Carena et al. 2021, ApJ 909, 187, for subhalo mass functions
with paltas/ovejero):

    p(lambda | data) ∝ p(lambda) prod_i ∫ q_i(y) p(y | lambda) / p_train(y) dy.

Multiplying the q_i directly would count the training prior N times and pull the answer
towards its centre. Two population models:

- ``infer_shared_value``: every lens has the same y = theta (e.g. one axion mass for all
  vortices): the integral is q_i(theta) / p_train(theta).
- ``infer_population_mean``: y_i ~ N(m, tau^2) (e.g. the mean substructure fraction of a
  population with intrinsic scatter tau): posterior on m, with tau known or marginalised over
  a grid (flat hyper-prior).

Training priors (``TrainingPrior``, in ``darklens.models.training_prior``): uniform on
[low, high] and Gaussian have closed forms; any other (``TrainingPrior.from_samples``: a
histogram of the training targets) is integrated on a grid. The hyper-prior p(lambda) is flat
over the grid. The posterior is evaluated on a grid (refined around its mass), from which
mean, std and central 68%/95% intervals are read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import log_ndtr, logsumexp  # scipy comes with scikit-learn

from darklens.models.training_prior import TrainingPrior

LOG_2PI = math.log(2 * math.pi)
#: Largest intermediate array (elements) built at once: lenses and points go in blocks.
_MAX_ELEMENTS = 1 << 21


def _log_normal(x: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    return -0.5 * (LOG_2PI + np.log(var) + (x - mean) ** 2 / var)


def _log_phi_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """log(Phi(b) - Phi(a)) for a <= b, accurate in both tails."""
    a, b = np.broadcast_arrays(np.asarray(a, float), np.asarray(b, float))
    upper = a > 0  # both in the upper tail: use the mirrored lower tail
    hi = np.where(upper, log_ndtr(-a), log_ndtr(b))
    lo = np.where(upper, log_ndtr(-b), log_ndtr(a))
    with np.errstate(divide="ignore", invalid="ignore"):
        return hi + np.log1p(-np.exp(np.minimum(lo - hi, 0.0)))


def lens_log_evidence(mu: np.ndarray, sigma: np.ndarray, prior: TrainingPrior,
                      m: np.ndarray, tau: np.ndarray | float = 0.0,
                      n_quad: int = 4001) -> np.ndarray:
    """log ∫ N(y; mu_i, sigma_i^2) N(y; m, tau^2) / p_train(y) dy for each lens i and each
    population point (m, tau): an array (N, L) for L points (tau = 0: the delta population).
    """
    mu = np.asarray(mu, np.float64).reshape(-1, 1)
    s2 = np.asarray(sigma, np.float64).reshape(-1, 1) ** 2
    m = np.asarray(m, np.float64).reshape(1, -1)
    t2 = np.broadcast_to(np.asarray(tau, np.float64) ** 2, m.shape)
    out = np.empty(np.broadcast_shapes(mu.shape, m.shape))
    delta = t2 == 0
    # tau = 0: the integral is N(m; mu, s^2) / p_train(m)
    if delta.any():
        md = np.where(delta, m, 0.0)
        out[:] = np.where(delta, _log_normal(md, mu, s2) - prior.logpdf(md), 0.0)
    if (~delta).any():
        t2p = np.where(delta, 1.0, t2)  # placeholder where delta, overwritten below
        if prior.kind == "gaussian":
            s02 = prior.std**2
            # N(y; mu, s^2) / N(y; m0, s0^2) = C N(y; a, b^2), b^-2 = s^-2 - s0^-2 (s < s0);
            # C = 1 / N(m0; a, s0^2 + b^2). A lens no narrower than the prior carries no
            # information about y and contributes a constant (0).
            informative = s2 < s02 * (1 - 1e-9)
            b2 = np.where(informative, 1.0 / (1.0 / np.where(informative, s2, 1.0) - 1.0 / s02),
                          1.0)
            a = b2 * (mu / s2 - prior.mean / s02)
            val = _log_normal(a, m, b2 + t2p) - _log_normal(prior.mean, a, s02 + b2)
            val = np.where(informative, val, 0.0)
        elif prior.kind == "uniform":
            # (high - low) ∫_low^high N(y; mu, s^2) N(y; m, tau^2) dy
            d2 = s2 * t2p / (s2 + t2p)
            c = d2 * (mu / s2 + m / t2p)
            d = np.sqrt(d2)
            val = (math.log(prior.high - prior.low) + _log_normal(mu, m, s2 + t2p)
                   + _log_phi_diff((prior.low - c) / d, (prior.high - c) / d))
        else:
            val = np.zeros(out.shape)
            use = ~delta[0]
            val[:, use] = _quadrature_log_evidence(mu, s2, prior, m[0, use], t2p[0, use], n_quad)
        out[:] = np.where(delta, out, val)
    return out


def _quadrature_log_evidence(mu: np.ndarray, s2: np.ndarray, prior: TrainingPrior,
                             m: np.ndarray, t2: np.ndarray, n_quad: int,
                             summed: bool = False) -> np.ndarray:
    """log ∫ N(y; mu_i, s_i^2) N(y; m_j, t_j^2) / p_train(y) dy (t_j > 0) on a grid over the
    prior's support: (N, L), or its sum over the lenses (L,) if ``summed``.

    One matrix product per block of points; the lens factors and the population kernels are
    each scaled by their maximum, so the result is exact up to rounding unless a lens and a
    point are hundreds of log units apart, where the evidence is negligible (it comes out as
    -inf). Memory: the lens factors, N x n_quad.
    """
    mu, s2 = mu.reshape(-1, 1), s2.reshape(-1, 1)
    m, t2 = np.asarray(m, np.float64).reshape(-1), np.asarray(t2, np.float64).reshape(-1)
    y = np.linspace(prior.low, prior.high, n_quad)
    log_dy = math.log(y[1] - y[0])
    log_r = _log_normal(y[None, :], mu, s2) - prior.logpdf(y)[None, :]  # (N, G)
    r_max = log_r.max(axis=1, keepdims=True)
    r = np.exp(log_r - r_max)
    del log_r
    out = np.zeros(m.size) if summed else np.zeros((mu.shape[0], m.size))
    block = max(1, _MAX_ELEMENTS // max(n_quad, mu.shape[0]))
    for lo in range(0, m.size, block):
        j = slice(lo, lo + block)
        log_k = _log_normal(y[:, None], m[None, j], t2[None, j])  # (G, B)
        k_max = log_k.max(axis=0, keepdims=True)
        with np.errstate(divide="ignore"):
            val = np.log(r @ np.exp(log_k - k_max)) + r_max + k_max + log_dy  # (N, B)
        if summed:
            out[j] = val.sum(axis=0)
        else:
            out[:, j] = val
    return out


def summed_log_evidence(mu: np.ndarray, sigma: np.ndarray, prior: TrainingPrior,
                        m: np.ndarray, tau: np.ndarray | float = 0.0,
                        n_quad: int = 4001) -> np.ndarray:
    """sum_i lens_log_evidence over the lenses, for each point (m, tau): shape (L,), computed
    in blocks so that memory stays bounded for thousands of lenses."""
    mu = np.asarray(mu, np.float64).reshape(-1)
    sigma = np.asarray(sigma, np.float64).reshape(-1)
    m = np.asarray(m, np.float64).reshape(-1)
    tau = np.broadcast_to(np.asarray(tau, np.float64), m.shape)
    total = np.zeros(m.size)
    rest = np.ones(m.size, dtype=bool)
    if prior.kind not in ("gaussian", "uniform"):  # quadrature: its own blocks
        rest = tau == 0
        if not rest.all():
            total[~rest] = _quadrature_log_evidence(mu, sigma**2, prior, m[~rest],
                                                    tau[~rest] ** 2, n_quad, summed=True)
    if rest.any():
        mr, tr = m[rest], tau[rest]
        block = max(1, _MAX_ELEMENTS // max(mr.size, 1))
        for lo in range(0, len(mu), block):
            total[rest] += lens_log_evidence(mu[lo:lo + block], sigma[lo:lo + block], prior, mr,
                                             tr, n_quad).sum(axis=0)
    return total


@dataclass
class PopulationResult:
    """Posterior of one population parameter on a grid, with summaries."""

    parameter: str
    grid: np.ndarray
    posterior: np.ndarray  # density on ``grid`` (integrates to 1)
    mean: float
    std: float
    median: float
    interval_68: tuple[float, float]
    interval_95: tuple[float, float]
    n_lenses: int

    def to_dict(self) -> dict:
        return {"parameter": self.parameter, "mean": self.mean, "std": self.std,
                "median": self.median, "interval_68": list(self.interval_68),
                "interval_95": list(self.interval_95), "n_lenses": self.n_lenses}


def _summarise(parameter: str, grid: np.ndarray, log_post: np.ndarray, n: int) -> PopulationResult:
    finite = np.isfinite(log_post)
    if not finite.any():
        raise ValueError(f"the posterior of {parameter} is zero everywhere on its grid")
    w = np.exp(log_post - log_post[finite].max())
    w[~finite] = 0.0
    dx = np.gradient(grid)
    w = w / np.sum(w * dx)
    cdf = np.cumsum(w * dx)
    cdf = (cdf - cdf[0]) / (cdf[-1] - cdf[0]) if cdf[-1] > cdf[0] else cdf

    def q(p: float) -> float:
        return float(np.interp(p, cdf, grid))

    mean = float(np.sum(grid * w * dx))
    std = float(math.sqrt(max(np.sum((grid - mean) ** 2 * w * dx), 0.0)))
    return PopulationResult(parameter, grid, w, mean, std, q(0.5), (q(0.15865), q(0.84135)),
                            (q(0.025), q(0.975)), n)


def _check(mu: np.ndarray, sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu = np.asarray(mu, np.float64).reshape(-1)
    sigma = np.asarray(sigma, np.float64).reshape(-1)
    if mu.shape != sigma.shape or mu.size == 0:
        raise ValueError("need equal, non-zero numbers of means and sigmas")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all() and (sigma > 0).all()):
        raise ValueError("means must be finite and sigmas finite and positive")
    return mu, sigma


def _search_range(mu: np.ndarray, sigma: np.ndarray, prior: TrainingPrior) -> tuple[float, float]:
    lo = float(np.min(mu - 8 * sigma))
    hi = float(np.max(mu + 8 * sigma))
    if prior.kind == "gaussian":
        lo, hi = min(lo, prior.mean - 8 * prior.std), max(hi, prior.mean + 8 * prior.std)
    if math.isfinite(prior.low):
        lo, hi = max(lo, prior.low), min(hi, prior.high)
    return lo, hi


def _refine(log_post_fn, lo: float, hi: float, n_grid: int) -> tuple[np.ndarray, np.ndarray]:
    """Evaluate on a coarse grid, then on a fine grid over where the posterior lives."""
    grid = np.linspace(lo, hi, n_grid)
    lp = log_post_fn(grid)
    keep = np.flatnonzero(np.isfinite(lp) & (lp > np.nanmax(lp) - 40))
    if keep.size:
        a, b = grid[max(keep[0] - 1, 0)], grid[min(keep[-1] + 1, n_grid - 1)]
        grid = np.linspace(a, b, n_grid)
        lp = log_post_fn(grid)
    return grid, lp


def infer_shared_value(mu: np.ndarray, sigma: np.ndarray, prior: TrainingPrior,
                       n_grid: int = 2001, parameter: str = "theta") -> PopulationResult:
    """Posterior of one value theta shared by every lens (flat hyper-prior on its range)."""
    mu, sigma = _check(mu, sigma)
    lo, hi = _search_range(mu, sigma, prior)

    def log_post(grid: np.ndarray) -> np.ndarray:
        return summed_log_evidence(mu, sigma, prior, grid, 0.0)

    grid, lp = _refine(log_post, lo, hi, n_grid)
    return _summarise(parameter, grid, lp, mu.size)


def infer_population_mean(mu: np.ndarray, sigma: np.ndarray, prior: TrainingPrior,
                          scatter: float | None = None, scatter_max: float | None = None,
                          n_grid: int = 401, n_scatter: int = 60,
                          parameter: str = "mean") -> PopulationResult:
    """Posterior of the mean m of a Gaussian population y_i ~ N(m, tau^2).

    ``scatter``: tau if known (0 gives ``infer_shared_value``); ``None``: tau is marginalised
    over a flat grid on (0, scatter_max] (default: the spread of the means plus the largest
    sigma).
    """
    mu, sigma = _check(mu, sigma)
    if scatter is not None:
        if scatter < 0:
            raise ValueError("scatter must be >= 0")
        taus = np.array([float(scatter)])
    else:
        top = scatter_max or float(np.std(mu) + np.max(sigma))
        taus = np.linspace(top / n_scatter, top, n_scatter)
    lo, hi = _search_range(mu, sigma, prior)

    def log_post(grid: np.ndarray) -> np.ndarray:
        mm = np.repeat(grid, taus.size)
        tt = np.tile(taus, grid.size)
        ll = summed_log_evidence(mu, sigma, prior, mm, tt).reshape(grid.size, -1)
        return logsumexp(ll, axis=1)  # marginalise tau (flat)

    grid, lp = _refine(log_post, lo, hi, n_grid)
    return _summarise(parameter, grid, lp, mu.size)
