"""Calibration of per-lens posteriors against the truth: SBC ranks, TARP, coverage by truth.

Marginal coverage (``regression_metrics``) can look right while the posteriors are wrong
where it matters, e.g. too confident at one end of the prior and too wide at the other.
These checks use the posterior *draws* of every test lens and its true value:

- ``sbc_ranks``: simulation-based calibration (Talts et al. 2018): the rank of the truth
  among L draws is uniform on 0..L when the posteriors are right (test images drawn from the
  training prior). ``rank_uniformity`` bins the ranks and gives a chi-square test p-value
  (scipy.stats.chisquare): small p means miscalibrated.
- ``tarp_coverage``: Tests of Accuracy with Random Points (Lemos et al. 2023, ICML): for each
  lens a random reference point theta_r (uniform in the prior's box); f_i = the fraction of
  draws closer to theta_r than the truth is; the expected coverage probability
  ECP(alpha) = mean_i [f_i < alpha] equals alpha for every alpha if and only if the posteriors
  are right (joint over all targets; distances in units of each target's prior range).
- ``coverage_by_truth``: coverage of the central 68% and 95% intervals (quantiles of the
  draws) in bins of the true value: where in the prior the intervals under- or over-cover.

Every random draw comes from a ``numpy.random.Generator`` seeded by the caller.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import chisquare

ALPHAS = np.linspace(0.0, 1.0, 51)


def sbc_ranks(samples: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Rank of each truth among its lens's draws: (N, L) draws, (N,) truths -> (N,) in 0..L."""
    samples = np.asarray(samples, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64).reshape(-1, 1)
    if samples.ndim != 2 or samples.shape[0] != truth.shape[0]:
        raise ValueError("need draws (N, L) and one truth per lens")
    return np.sum(samples < truth, axis=1)


def rank_uniformity(ranks: np.ndarray, n_draws: int, n_bins: int = 20) -> dict:
    """Histogram of SBC ranks in ``n_bins`` equal bins of 0..n_draws and the chi-square test
    p-value of uniformity (bins as equal as the integer ranks allow)."""
    ranks = np.asarray(ranks)
    n_bins = int(min(n_bins, n_draws + 1))
    edges = np.linspace(0, n_draws + 1, n_bins + 1)
    counts, _ = np.histogram(ranks, bins=edges)
    # ranks are integers: the expected share of a bin is the integers it holds
    ints = np.diff(np.ceil(edges))
    expected = ranks.size * ints / ints.sum()
    p = float(chisquare(counts, expected).pvalue) if ranks.size else float("nan")
    return {"counts": counts.tolist(), "edges": edges.tolist(), "p_value": p,
            "n_draws": int(n_draws)}


def tarp_coverage(samples: np.ndarray, truth: np.ndarray, low: np.ndarray, high: np.ndarray,
                  rng: np.random.Generator, alphas: np.ndarray = ALPHAS) -> dict:
    """TARP expected coverage (see the module docstring) of draws (N, L, T) and truths (N, T)
    in the box [low, high] (T,): ``alpha``, ``ecp`` and the ECP at 0.68 and 0.95."""
    samples = np.asarray(samples, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64).reshape(samples.shape[0], -1)
    low, high = np.asarray(low, np.float64), np.asarray(high, np.float64)
    scale = high - low
    s, t = (samples - low) / scale, (truth - low) / scale
    ref = rng.uniform(size=t.shape)
    d_samples = np.linalg.norm(s - ref[:, None, :], axis=-1)
    d_truth = np.linalg.norm(t - ref, axis=-1)
    f = np.mean(d_samples < d_truth[:, None], axis=1)
    ecp = np.array([np.mean(f < a) for a in alphas])
    return {"alpha": np.asarray(alphas).tolist(), "ecp": ecp.tolist(),
            "ecp_68": float(np.mean(f < 0.68)), "ecp_95": float(np.mean(f < 0.95)),
            "max_deviation": float(np.max(np.abs(ecp - alphas)))}


def central_intervals(samples: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Central ``level`` interval of each lens's draws (N, L): (low, high), each (N,)."""
    q = (1 - level) / 2
    lo, hi = np.quantile(samples, [q, 1 - q], axis=1)
    return lo, hi


def truth_bins(truth: np.ndarray, n_bins: int) -> np.ndarray:
    """Edges of ``n_bins`` equal bins spanning the truths (or fewer for few distinct values)."""
    lo, hi = float(np.min(truth)), float(np.max(truth))
    if hi <= lo:
        return np.array([lo - 0.5, hi + 0.5])
    return np.linspace(lo, hi, n_bins + 1)


def _bin_index(truth: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.clip(np.searchsorted(edges, truth, side="right") - 1, 0, len(edges) - 2)


def coverage_by_truth(samples: np.ndarray, truth: np.ndarray, n_bins: int = 8) -> dict:
    """Coverage of the central 68% / 95% intervals in bins of the truth (one target)."""
    truth = np.asarray(truth, np.float64).reshape(-1)
    edges = truth_bins(truth, n_bins)
    idx = _bin_index(truth, edges)
    out: dict = {"edges": edges.tolist(), "n": [], "coverage_68": [], "coverage_95": []}
    inside = {}
    for level in (0.68, 0.95):
        lo, hi = central_intervals(samples, level)
        inside[level] = (truth >= lo) & (truth <= hi)
    for b in range(len(edges) - 1):
        sel = idx == b
        out["n"].append(int(sel.sum()))
        for level, key in ((0.68, "coverage_68"), (0.95, "coverage_95")):
            out[key].append(float(inside[level][sel].mean()) if sel.any() else None)
    out["central_68"] = float(inside[0.68].mean())
    out["central_95"] = float(inside[0.95].mean())
    return out


def calibration_report(samples: np.ndarray, truth: np.ndarray, targets: list[str],
                       support: list[list[float]] | None, seed: int = 0,
                       n_bins: int = 8) -> dict:
    """All of the above for draws (N, L, T) and truths (N, T): per target SBC and coverage by
    truth (and a one-target TARP); joint TARP over all targets when there are several.
    ``support`` (per target [low, high]) is TARP's box; without it, the truths' range."""
    samples = np.asarray(samples, np.float64)
    truth = np.asarray(truth, np.float64).reshape(samples.shape[0], -1)
    rng = np.random.default_rng(seed)
    if support is None:
        support = [[float(truth[:, j].min()), float(truth[:, j].max())]
                   for j in range(truth.shape[1])]
    low = np.array([s[0] for s in support])
    high = np.array([s[1] for s in support])
    high = np.where(high > low, high, low + 1.0)
    out: dict = {"targets": {}, "seed": seed, "n_lenses": int(samples.shape[0]),
                 "n_draws": int(samples.shape[1])}
    for j, t in enumerate(targets):
        ranks = sbc_ranks(samples[:, :, j], truth[:, j])
        out["targets"][t] = {
            "sbc": rank_uniformity(ranks, samples.shape[1]),
            "tarp": tarp_coverage(samples[:, :, j:j + 1], truth[:, j:j + 1], low[j:j + 1],
                                  high[j:j + 1], rng),
            "coverage_by_truth": coverage_by_truth(samples[:, :, j], truth[:, j], n_bins),
        }
    if len(targets) > 1:
        out["tarp_joint"] = tarp_coverage(samples, truth, low, high, rng)
    return out
