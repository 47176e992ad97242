"""Population inference from per-lens posteriors of any shape, by reweighting against the
training prior.

Lens i's posterior q_i(y) (binned, flow or Gaussian; ``darklens.models.posterior_heads``)
was learned under the training prior p_train(y). For a population model p(y | lambda),

    p(lambda | data) ∝ p(lambda) prod_i ∫ q_i(y) p(y | lambda) / p_train(y) dy

(importance reweighting; Wagner-Carena et al. 2021). The integral is a sum over the grid on
which the run evaluates each q_i (its marginal density over the target's support), so any
per-lens shape, such as a plateau cut at the prior's edge, enters as it is.

Population models, with flat hyper-priors over the support:

- ``shared``: every lens has the same y = theta (e.g. one axion mass);
- ``mean``: y_i ~ N(m, tau^2) truncated to the support: the location m ("population mean")
  and the scatter tau, tau marginalised on (grid step, half the support] (or fixed).

``constrained`` says whether the data narrowed the hyper-prior on the answer: its posterior
standard deviation must be at most ``CONSTRAINED_RATIO`` of the flat hyper-prior's
(contraction at least 0.75) and its density at either end of the support below
``EDGE_RATIO`` of its peak. Otherwise the answer is "not constrained", stated with its 95%
interval, instead of a tight-looking number; a posterior piled against one end is a one-sided
``limit`` (e.g. the axion mass of model-iii above log10 m = -23.3, where the images carry
almost no information: a lower limit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.special import logsumexp

from darklens.evaluate.population import PopulationResult, _refine, _summarise
from darklens.models.training_prior import TrainingPrior

CONSTRAINED_RATIO = 0.5
EDGE_RATIO = 0.2
SEEN_RATIO = 1e-3  # where the divided-out prior is below this of its peak: never trained on
_FLOOR = 1e-12  # a lens's density floor, relative to its peak (no log of zero)


@dataclass
class HierarchicalResult:
    """The population posterior of one quantity and whether the data constrain it."""

    result: PopulationResult
    constrained: bool
    contraction: float  # 1 - var(posterior) / var(flat hyper-prior)
    limit: dict | None = None  # {"lower": q05} or {"upper": q95} when piled at an edge
    scatter: dict | None = field(default=None)  # tau's posterior summary (model "mean")

    def to_dict(self) -> dict:
        return {**self.result.to_dict(), "constrained": self.constrained,
                "contraction": self.contraction, "limit": self.limit,
                "scatter": self.scatter}


def _lens_weights(grid: np.ndarray, density: np.ndarray, prior: TrainingPrior) -> np.ndarray:
    """q_i(y_g) / p_train(y_g) times the trapezoid weight of y_g: (N, G); zero where the
    training prior is."""
    dy = np.gradient(grid)
    dy[[0, -1]] *= 0.5
    q = np.asarray(density, np.float64)
    q = np.maximum(q, _FLOOR * q.max(axis=1, keepdims=True))
    with np.errstate(divide="ignore"):
        log_p = prior.logpdf(grid)
    inv_p = np.where(np.isfinite(log_p), np.exp(-np.where(np.isfinite(log_p), log_p, 0.0)), 0.0)
    return q * (inv_p * dy)[None, :]


def _seen(grid: np.ndarray, density: np.ndarray, prior: TrainingPrior
          ) -> tuple[np.ndarray, np.ndarray]:
    """The grid (and densities) cut to the span where the prior divided out holds at least
    ``SEEN_RATIO`` of its peak density: beyond it the network saw (almost) no training
    image, both its posteriors and that prior are floors there, and their quotient, raised to
    the N-th power, would pull the answer to the edge."""
    with np.errstate(divide="ignore"):
        log_p = prior.logpdf(grid)
    seen = np.flatnonzero(np.isfinite(log_p) & (log_p >= np.max(log_p) + np.log(SEEN_RATIO)))
    if seen.size < 3:
        return grid, density
    keep = slice(seen[0], seen[-1] + 1)
    return grid[keep], density[:, keep]


def _check(grid: np.ndarray, density: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    grid = np.asarray(grid, np.float64).reshape(-1)
    density = np.asarray(density, np.float64)
    if density.ndim != 2 or density.shape[1] != grid.size or density.shape[0] == 0:
        raise ValueError("need one density row (on the grid) per lens")
    if not (np.isfinite(density).all() and (density >= 0).all()
            and (density.max(axis=1) > 0).all()):
        raise ValueError("densities must be finite, non-negative and not all zero")
    if grid.size < 3 or not np.all(np.diff(grid) > 0):
        raise ValueError("the grid must be increasing, with at least 3 points")
    return grid, density


def _verdict(res: PopulationResult, low: float, high: float
             ) -> tuple[bool, float, dict | None]:
    """(constrained, contraction, one-sided limit) of a posterior on [low, high]."""
    hyper_var = (high - low) ** 2 / 12
    contraction = 1.0 - res.std**2 / hyper_var
    limit = None
    peak = float(np.max(res.posterior))
    at_low = res.grid[0] <= low + 1e-9 * (high - low) and res.posterior[0] >= EDGE_RATIO * peak
    at_high = res.grid[-1] >= high - 1e-9 * (high - low) and \
        res.posterior[-1] >= EDGE_RATIO * peak
    cdf = np.cumsum(res.posterior * np.gradient(res.grid))
    cdf /= cdf[-1]
    if at_high and not at_low:
        limit = {"lower": float(np.interp(0.05, cdf, res.grid)), "level": 0.95}
    elif at_low and not at_high:
        limit = {"upper": float(np.interp(0.95, cdf, res.grid)), "level": 0.95}
    narrow = res.std <= CONSTRAINED_RATIO * math.sqrt(hyper_var)
    return bool(narrow and not at_low and not at_high), float(contraction), limit


def infer_shared(grid: np.ndarray, density: np.ndarray, prior: TrainingPrior,
                 parameter: str = "theta", n_grid: int = 401) -> HierarchicalResult:
    """Posterior of one value shared by every lens (flat hyper-prior on the support); the
    lenses' log densities are interpolated linearly onto a grid refined where it lives."""
    grid, density = _seen(*_check(grid, density), prior)
    log_q = np.log(np.maximum(density, _FLOOR * density.max(axis=1, keepdims=True)))

    def log_post(theta: np.ndarray) -> np.ndarray:
        total = np.zeros(theta.size)
        for row in log_q:
            total += np.interp(theta, grid, row)
        return total - density.shape[0] * prior.logpdf(theta)

    fine, lp = _refine(log_post, grid[0], grid[-1], n_grid)
    res = _summarise(parameter, fine, lp, density.shape[0])
    return HierarchicalResult(res, *_verdict(res, grid[0], grid[-1]))


def infer_mean_scatter(grid: np.ndarray, density: np.ndarray, prior: TrainingPrior,
                       scatter: float | None = None, n_scatter: int = 40,
                       parameter: str = "mean", n_grid: int = 401) -> HierarchicalResult:
    """Posterior of the location m of a truncated Gaussian population y_i ~ N(m, tau^2) on
    the support, tau marginalised (flat) or fixed by ``scatter``; m on a grid refined where
    its posterior lives."""
    grid, density = _seen(*_check(grid, density), prior)
    w = _lens_weights(grid, density, prior)  # (N, G)
    step = float(np.min(np.diff(grid)))
    if scatter is not None:
        if not scatter >= 0:
            raise ValueError("scatter must be >= 0")
        if scatter < step:  # narrower than the grid: every lens shares one value
            return infer_shared(grid, density, prior, parameter)
        taus = np.array([float(scatter)])
    else:
        taus = np.geomspace(step, 0.5 * (grid[-1] - grid[0]), n_scatter)  # flat in log tau
    dy = np.gradient(grid)
    dy[[0, -1]] *= 0.5

    def log_like(m: np.ndarray) -> np.ndarray:  # (M, tau)
        out = np.empty((m.size, taus.size))
        for k, tau in enumerate(taus):
            kern = np.exp(-0.5 * ((grid[:, None] - m[None, :]) / tau) ** 2)  # (G, M)
            kern /= (kern * dy[:, None]).sum(axis=0, keepdims=True)  # truncated
            with np.errstate(divide="ignore"):
                out[:, k] = np.log(w @ kern).sum(axis=0)
        return out

    fine, lp = _refine(lambda m: logsumexp(log_like(m), axis=1), grid[0], grid[-1], n_grid)
    res = _summarise(parameter, fine, lp, density.shape[0])
    tau_summary = None
    if taus.size > 1:
        tau_res = _summarise("scatter", taus, logsumexp(log_like(fine), axis=0),
                             density.shape[0])
        tau_summary = {"mean": tau_res.mean, "interval_68": list(tau_res.interval_68),
                       "interval_95": list(tau_res.interval_95)}
    return HierarchicalResult(res, *_verdict(res, grid[0], grid[-1]), scatter=tau_summary)
