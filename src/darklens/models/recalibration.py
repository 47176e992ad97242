"""Post-hoc recalibration of per-lens posteriors, fitted on validation lenses.

The recalibration of Kuleshov et al. (2018, "Accurate uncertainties for deep learning using
calibrated regression"): the PIT value of lens i is p_i = F_i(y_i), its posterior CDF at the
truth. Right posteriors give uniform p over lenses drawn from the training prior (what SBC
tests). A monotone map R fitted so that R(p) is uniform over the validation lenses makes the
posteriors G_i = R(F_i) calibrated in that sense; G_i's quantile function is F_i^-1(R^-1(u)).

``PitMap`` is R for one target: piecewise linear and strictly increasing from (0, 0) to (1, 1).
By default it is the CDF of a Beta(a, b) fitted to the validation PIT values (beta
calibration, Kull et al. 2017: two numbers, so little noise from a validation set of a
thousand lenses), or the identity when they do not reject uniformity; ``method="quantiles"``
is Kuleshov et al.'s empirical CDF, any shape but noisier. ``Recalibration`` holds one map
per target and applies them to a lens's posterior: each draw s moves to F^-1(R^-1(F(s)))
(per target, by its marginal CDF, so a joint posterior keeps its dependence between
targets), each marginal density on its grid becomes R'(F(y)) f(y). It is global (one map per
target for every lens): it makes the PIT values uniform over lenses like the validation ones,
not the coverage in every bin of the truth.

Saved with the run as ``RUN/recalibration.json`` (atomic JSON, checked when read).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from darklens.errors import CheckpointError
from darklens.io import read_json_object, write_json_atomic

RECALIBRATION_JSON = "recalibration.json"
MIN_LENSES = 50  # fewer validation lenses than this: too noisy a map, none is fitted
UNIFORM_P = 0.05  # beta map: the identity unless uniform PIT is rejected at this level
_TINY = 1e-9  # the smallest step between knots (strictly increasing map)


def pit_values(samples: np.ndarray, truth: np.ndarray, grids: np.ndarray | None = None,
               density: np.ndarray | None = None) -> np.ndarray:
    """Each lens's PIT value per target: (N, L, T) draws, (N, T) truths -> (N, T) in [0, 1].
    The CDF is that of the marginal densities (N, T, G) on ``grids`` (T, G) when given (the
    tails beyond the draws included), else the draws' (``empirical_cdf``): the CDF that
    ``Recalibration.apply_samples`` maps when given the same."""
    samples = np.asarray(samples, np.float64)
    truth = np.asarray(truth, np.float64).reshape(samples.shape[0], -1)
    if samples.ndim != 3 or samples.shape[2] != truth.shape[1]:
        raise ValueError("need draws (N, L, T) and truths (N, T)")
    out = np.empty(truth.shape)
    for j in range(truth.shape[1]):
        if density is not None and grids is not None:
            g = np.asarray(grids[j], np.float64)
            cdf = grid_cdf(g, np.asarray(density)[:, j])
            out[:, j] = [np.interp(y, g, c) for c, y in zip(cdf, truth[:, j], strict=True)]
            continue
        srt = np.sort(samples[:, :, j], axis=1)
        out[:, j] = [empirical_cdf(s, y) for s, y in zip(srt, truth[:, j], strict=True)]
    return out


def grid_cdf(grid: np.ndarray, density: np.ndarray) -> np.ndarray:
    """CDFs (N, G) of densities (N, G) on ``grid`` (G,): cumulative trapezoid, normalised."""
    f = np.asarray(density, np.float64)
    steps = 0.5 * (f[:, 1:] + f[:, :-1]) * np.diff(grid)[None, :]
    cdf = np.concatenate([np.zeros((len(f), 1)), np.cumsum(steps, axis=1)], axis=1)
    return cdf / np.where(cdf[:, -1:] > 0, cdf[:, -1:], 1.0)


def empirical_cdf(sorted_draws: np.ndarray, y: float) -> float:
    """The CDF of L sorted draws at y: (k - 1/2) / L at the k-th draw, linear in between, 0
    below the first and 1 above the last."""
    n = len(sorted_draws)
    if y < sorted_draws[0]:
        return 0.0
    if y > sorted_draws[-1]:
        return 1.0
    return float(np.interp(y, sorted_draws, (np.arange(n) + 0.5) / n))


def beta_fit(pit: np.ndarray) -> tuple[float, float, float]:
    """The Beta(a, b) with the mean and variance of the PIT values (moments: robust to the
    few lenses whose truth lies beyond every draw, whose PIT from draws is exactly 0 or 1),
    and the p-value of uniformity from those two moments: z-scores of the mean against 1/2
    (standard error sqrt(1/12 / N)) and of the variance against 1/12 (sqrt(1/180 / N)), whose
    squares sum to a chi-square with 2 degrees of freedom: (a, b, p)."""
    from scipy.stats import chi2

    pit = np.asarray(pit, np.float64).reshape(-1)
    n = pit.size
    m, v = float(pit.mean()), float(pit.var())
    stat = (m - 0.5) ** 2 / (1 / 12 / n) + (v - 1 / 12) ** 2 / (1 / 180 / n)
    v = min(max(v, 1e-6), 0.999 * m * (1 - m))  # a Beta needs v < m (1 - m)
    common = m * (1 - m) / v - 1
    return m * common, (1 - m) * common, float(chi2.sf(stat, 2))


@dataclass(frozen=True)
class PitMap:
    """R: [0, 1] -> [0, 1], piecewise linear through ``x`` -> ``y`` (both strictly
    increasing, from 0 to 1)."""

    x: tuple[float, ...]
    y: tuple[float, ...]

    def __post_init__(self) -> None:
        x, y = np.asarray(self.x, np.float64), np.asarray(self.y, np.float64)
        if x.ndim != 1 or x.shape != y.shape or x.size < 2:
            raise ValueError("a PIT map needs two knot lists of equal length >= 2")
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            raise ValueError("PIT map knots must be finite")
        if x[0] != 0 or x[-1] != 1 or y[0] != 0 or y[-1] != 1:
            raise ValueError("a PIT map runs from (0, 0) to (1, 1)")
        if not (np.all(np.diff(x) > 0) and np.all(np.diff(y) > 0)):
            raise ValueError("PIT map knots must be strictly increasing")

    @classmethod
    def identity(cls) -> PitMap:
        return cls((0.0, 1.0), (0.0, 1.0))

    @classmethod
    def fit(cls, pit: np.ndarray, method: str = "beta", n_knots: int | None = None
            ) -> PitMap:
        """R from validation PIT values, by ``method``:

        - ``beta``: the CDF of the Beta(a, b) distribution with their mean and variance
          (``beta_fit``; the family of Kull et al. 2017's beta calibration), tabulated on 201
          knots; the identity when those two moments do not reject uniformity (p above
          ``UNIFORM_P``). Two parameters cover posteriors too wide or too narrow (a = b above
          or below 1) and shifted (a != b); its sampling noise is that of two numbers, where
          a knot per quantile carries the noise of every bin.
        - ``quantiles``: their empirical CDF (Kuleshov et al.'s isotonic fit) through their
          quantiles at levels k / K (K = ``n_knots``, default about sqrt(N) / 2, 4 to 40):
          any shape, but each knot carries the noise of N validation lenses.
        """
        pit = np.asarray(pit, np.float64).reshape(-1)
        if pit.size == 0 or not np.isfinite(pit).all() or pit.min() < 0 or pit.max() > 1:
            raise ValueError("PIT values must be finite and in [0, 1]")
        if method == "beta":
            a, b, p_uniform = beta_fit(pit)
            if p_uniform > UNIFORM_P:  # no evidence of miscalibration: leave it alone
                return cls.identity()
            from scipy.stats import beta

            x = np.linspace(0.0, 1.0, 201)
            y = beta.cdf(x, a, b)
            y[0], y[-1] = 0.0, 1.0
            for i in range(1, len(y) - 1):  # strictly increasing in floating point
                y[i] = min(max(y[i], y[i - 1] + _TINY), 1.0 - _TINY * (len(y) - 1 - i))
            return cls(tuple(x.tolist()), tuple(y.tolist()))
        if method != "quantiles":
            raise ValueError(f"unknown PIT map method {method!r}; use beta or quantiles")
        k = n_knots or int(np.clip(round(np.sqrt(pit.size) / 2), 4, 40))
        levels = np.linspace(0.0, 1.0, k + 1)
        x = np.quantile(pit, levels)
        x[0], x[-1] = 0.0, 1.0
        for i in range(1, k):  # ties (e.g. many PIT values of exactly 0): nudge apart
            x[i] = min(max(x[i], x[i - 1] + _TINY), 1.0 - _TINY * (k - i))
        return cls(tuple(x.tolist()), tuple(levels.tolist()))

    def __call__(self, p: np.ndarray) -> np.ndarray:
        return np.interp(p, self.x, self.y)

    def inverse(self, u: np.ndarray) -> np.ndarray:
        return np.interp(u, self.y, self.x)

    def slope(self, p: np.ndarray) -> np.ndarray:
        """R'(p), piecewise constant (the right-hand segment's at a knot)."""
        x, y = np.asarray(self.x), np.asarray(self.y)
        seg = np.clip(np.searchsorted(x, p, side="right") - 1, 0, len(x) - 2)
        return (y[seg + 1] - y[seg]) / (x[seg + 1] - x[seg])

    def to_dict(self) -> dict[str, Any]:
        return {"x": list(self.x), "y": list(self.y)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PitMap:
        return cls(tuple(float(v) for v in d["x"]), tuple(float(v) for v in d["y"]))


@dataclass
class Recalibration:
    """One ``PitMap`` per target, fitted on validation lenses, and what it was fitted on."""

    targets: tuple[str, ...]
    maps: tuple[PitMap, ...]
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def fit(cls, targets: list[str] | tuple[str, ...], samples: np.ndarray,
            truth: np.ndarray, grids: np.ndarray | None = None,
            density: np.ndarray | None = None, info: dict[str, Any] | None = None,
            method: str = "beta") -> Recalibration:
        """Per target, ``PitMap.fit`` (``method``) of the validation lenses' PIT values
        (``pit_values`` of their draws (N, L, T), or densities (N, T, G) on ``grids``, and
        truths (N, T))."""
        pit = pit_values(samples, truth, grids, density)
        if pit.shape[1] != len(targets):
            raise ValueError("one column of truths per target")
        return cls(tuple(targets),
                   tuple(PitMap.fit(pit[:, j], method) for j in range(pit.shape[1])),
                   dict(info or {}))

    def apply_samples(self, samples: np.ndarray, grids: np.ndarray | None = None,
                      density: np.ndarray | None = None) -> np.ndarray:
        """Draws (N, L, T) of the recalibrated posteriors: each draw s, per target, moves to
        F^-1(R^-1(F(s))), F its lens's marginal CDF: from the densities (N, T, G) on
        ``grids`` when given (draws can then move anywhere in the support), else from the
        draws themselves (``empirical_cdf``: they stay within their range). Draws keep their
        order, and so their pairing across targets."""
        samples = np.asarray(samples)
        out = np.empty_like(samples)
        n_draws = samples.shape[1]
        u = (np.arange(n_draws) + 0.5) / n_draws
        for j, pmap in enumerate(self.maps):
            s = samples[:, :, j].astype(np.float64)
            if density is not None and grids is not None:
                g = np.asarray(grids[j], np.float64)
                cdf = grid_cdf(g, np.asarray(density)[:, j])
                moved = np.empty_like(s)
                for i, c in enumerate(cdf):
                    keep = np.concatenate([[True], np.diff(c) > 0])  # invertible part
                    v = pmap.inverse(np.interp(s[i], g, c))
                    moved[i] = np.interp(v, c[keep], g[keep])
                out[:, :, j] = moved
                continue
            v = pmap.inverse(u)  # quantile levels of the original draws
            order = np.argsort(s, axis=1, kind="stable")
            srt = np.take_along_axis(s, order, axis=1)
            moved = np.stack([np.interp(v, u, row) for row in srt])
            np.put_along_axis(out[:, :, j], order, moved.astype(out.dtype), axis=1)
        return out

    def apply_density(self, grids: np.ndarray, density: np.ndarray) -> np.ndarray:
        """Marginal densities (N, T, G) on ``grids`` (T, G) of the recalibrated posteriors:
        g = R'(F) f, F the trapezoid CDF of f; each row renormalised on its grid."""
        density = np.asarray(density, np.float64)
        out = np.empty_like(density)
        for j, pmap in enumerate(self.maps):
            g = np.asarray(grids[j], np.float64)
            f = density[:, j]
            new = pmap.slope(grid_cdf(g, f)) * f
            norm = np.trapezoid(new, g, axis=1)[:, None]
            out[:, j] = new / np.where(norm > 0, norm, 1.0)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "pit-recalibration", "method": "Kuleshov et al. 2018",
                "targets": {t: m.to_dict() for t, m in zip(self.targets, self.maps,
                                                           strict=True)},
                "info": self.info}

    @classmethod
    def from_dict(cls, d: dict[str, Any], targets: tuple[str, ...] | list[str]
                  ) -> Recalibration:
        if d.get("kind") != "pit-recalibration" or not isinstance(d.get("targets"), dict):
            raise ValueError("not a PIT recalibration")
        missing = [t for t in targets if t not in d["targets"]]
        if missing:
            raise ValueError(f"no map for {', '.join(missing)}")
        maps = tuple(PitMap.from_dict(d["targets"][t]) for t in targets)
        return cls(tuple(targets), maps, dict(d.get("info") or {}))

    def save(self, run_dir: str | os.PathLike) -> Path:
        path = Path(run_dir) / RECALIBRATION_JSON
        write_json_atomic(path, self.to_dict())
        return path


def load_recalibration(run_dir: str | os.PathLike, targets: tuple[str, ...] | list[str]
                       ) -> Recalibration | None:
    """The run's recalibration, or None if it has none (runs trained before it existed, or
    with too few validation lenses); a damaged file is a ``CheckpointError``."""
    path = Path(run_dir) / RECALIBRATION_JSON
    if not path.exists():
        return None
    obj = read_json_object(path, "posterior recalibration")
    try:
        return Recalibration.from_dict(obj, targets)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: bad recalibration ({err})") from None
