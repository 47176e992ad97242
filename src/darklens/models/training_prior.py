"""The training prior of a regression target: the distribution population inference divides out.

A network trained on simulations learns per-lens posteriors that contain the distribution its
training targets were drawn from; ``darklens.evaluate.population`` divides it out.
``TrainingPrior`` is that distribution (uniform, Gaussian or histogram; ``to_dict`` /
``from_dict`` for ``regression.json``). ``describe_training_prior`` works it out at training
time and ``darklens regress train`` records it in ``RUN/regression.json`` (``training_prior``,
per target):

- exact, from the simulator preset the data carry, where a target is drawn straight from one of
  its priors: ``log10_axion_mass`` (log-uniform axion mass -> uniform in log10),
  ``theta_e`` (uniform, when the lens mass is not drawn instead), ``vortex_length`` and
  ``vortex_mass`` (uniform, when drawn directly), provided every training value lies in it;
- otherwise a histogram of the training targets (one bin per integer for integer targets such
  as ``n_subhalos``; else about sqrt(N) bins, at most 40), which carries sampling noise: a
  known prior can be given instead (``darklens regress population --prior``).

``darklens.evaluate.run_population.run_training_prior`` reads it back for a run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from darklens.errors import DarklensError, DataError

LOG_2PI = math.log(2 * math.pi)

#: Simulator targets drawn straight from one preset prior: target -> (prior field, the preset
#: switch "key=value" under which the simulator draws it from that prior).
_PRESET_TARGETS: dict[str, tuple[str, str]] = {
    "log10_axion_mass": ("axion_mass", "vortex_length_kind=axion"),
    "theta_e": ("theta_e", "lens_mass=None"),
    "vortex_length": ("vortex_length", "vortex_length_kind=fixed"),
    "vortex_mass": ("vortex_mass", "vortex_mass_kind=mass"),
}


def _log_normal(x: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    return -0.5 * (LOG_2PI + np.log(var) + (x - mean) ** 2 / var)


@dataclass(frozen=True)
class TrainingPrior:
    """The distribution the training targets were drawn from: p_train(y).

    ``kind``: ``"uniform"`` (``low``, ``high``), ``"gaussian"`` (``mean``, ``std``) or
    ``"histogram"`` (``edges``, ``density``; see ``from_samples``).
    """

    kind: str
    low: float = -math.inf
    high: float = math.inf
    mean: float = 0.0
    std: float = 1.0
    edges: tuple[float, ...] = ()
    density: tuple[float, ...] = ()

    @classmethod
    def uniform(cls, low: float, high: float) -> TrainingPrior:
        if not high > low:
            raise ValueError("a uniform prior needs high > low")
        return cls("uniform", low=float(low), high=float(high))

    @classmethod
    def gaussian(cls, mean: float, std: float) -> TrainingPrior:
        if not std > 0:
            raise ValueError("a Gaussian prior needs std > 0")
        return cls("gaussian", mean=float(mean), std=float(std))

    @classmethod
    def from_samples(cls, values: np.ndarray, bins: int = 40) -> TrainingPrior:
        """A histogram density of the training targets (empty bins get a small floor).

        Its log density is interpolated linearly between bin centres: the posterior of N lenses
        divides by p_train N times, so steps at bin edges would be amplified N-fold. Its
        sampling noise is amplified too: prefer ``uniform``/``gaussian`` when the training
        prior is known."""
        v = np.asarray(values, dtype=np.float64)
        v = v[np.isfinite(v)]
        if v.size < 2 or np.ptp(v) == 0:
            raise ValueError("need at least two distinct training values for a histogram prior")
        density, edges = np.histogram(v, bins=bins, density=True)
        density = np.maximum(density, 1e-3 * density.max())
        density = density / np.sum(density * np.diff(edges))
        return cls("histogram", low=float(edges[0]), high=float(edges[-1]),
                   edges=tuple(edges.tolist()), density=tuple(density.tolist()))

    def to_dict(self) -> dict:
        """JSON-able form (only the fields of its kind); ``from_dict`` reads it back."""
        if self.kind == "uniform":
            return {"kind": "uniform", "low": self.low, "high": self.high}
        if self.kind == "gaussian":
            return {"kind": "gaussian", "mean": self.mean, "std": self.std}
        return {"kind": self.kind, "edges": list(self.edges), "density": list(self.density)}

    @classmethod
    def from_dict(cls, d: dict) -> TrainingPrior:
        """The prior written by ``to_dict``; ValueError if it is not one."""
        try:
            kind = d["kind"]
            if kind == "uniform":
                return cls.uniform(d["low"], d["high"])
            if kind == "gaussian":
                return cls.gaussian(d["mean"], d["std"])
            if kind == "histogram":
                edges = tuple(float(v) for v in d["edges"])
                density = tuple(float(v) for v in d["density"])
                if len(edges) != len(density) + 1 or len(density) < 1 or \
                        not all(b > a for a, b in zip(edges, edges[1:], strict=False)) or \
                        not all(v > 0 for v in density):
                    raise ValueError("bad histogram")
                return cls("histogram", low=edges[0], high=edges[-1], edges=edges,
                           density=density)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"not a training prior: {err}") from None
        raise ValueError(f"unknown training prior kind {kind!r}")

    def logpdf(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y, dtype=np.float64)
        if self.kind == "gaussian":
            return _log_normal(y, self.mean, self.std**2)
        inside = (y >= self.low) & (y <= self.high)
        if self.kind == "uniform":
            val = np.full(y.shape, -math.log(self.high - self.low))
        elif self.kind == "histogram":  # log density linear between bin centres
            edges, dens = np.asarray(self.edges), np.asarray(self.density)
            val = np.interp(y, 0.5 * (edges[1:] + edges[:-1]), np.log(dens))
        else:
            raise ValueError(f"unknown training prior kind {self.kind!r}")
        return np.where(inside, val, -np.inf)


def _preset_prior(target: str, preset: dict[str, Any] | None) -> TrainingPrior | None:
    """The exact training prior of ``target`` from a preset's ``to_dict`` form, if it has one."""
    if not isinstance(preset, dict) or target not in _PRESET_TARGETS:
        return None
    field, switch = _PRESET_TARGETS[target]
    key, want = switch.split("=")
    have = preset.get(key)
    if (None if want == "None" else want) != have:
        return None
    text = preset.get(field)
    if not isinstance(text, str) or text.count(":") != 2:
        return None
    kind, lo_text, hi_text = text.split(":")
    try:
        lo, hi = float(lo_text), float(hi_text)
    except ValueError:
        return None
    if target == "log10_axion_mass":
        if kind != "loguniform" or not 0 < lo < hi:
            return None
        return TrainingPrior.uniform(math.log10(lo), math.log10(hi))
    if kind != "uniform" or not lo < hi:
        return None
    return TrainingPrior.uniform(lo, hi)


def histogram_prior(values: np.ndarray) -> TrainingPrior:
    """A histogram of training targets: unit bins for integers, else ~sqrt(N) bins (5 to 40)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size and np.all(v == np.round(v)) and 0 < np.ptp(v) <= 200:
        bins: int | np.ndarray = np.arange(v.min() - 0.5, v.max() + 1.0)
    else:
        bins = int(np.clip(round(math.sqrt(max(v.size, 1))), 5, 40))
    return TrainingPrior.from_samples(v, bins=bins)


def describe_training_prior(target: str, values: np.ndarray,
                            preset: dict[str, Any] | None = None) -> dict[str, Any]:
    """``{"prior": TrainingPrior.to_dict(), "source": why}`` for one target's training values,
    or ``{"prior": None, "source": why not}`` when they have no spread to form a prior."""
    v = np.asarray(values, dtype=np.float64)
    exact = _preset_prior(target, preset)
    if exact is not None:
        tol = 1e-9 * (exact.high - exact.low)
        if v.size and v.min() >= exact.low - tol and v.max() <= exact.high + tol:
            field = _PRESET_TARGETS[target][0]
            return {"prior": exact.to_dict(),
                    "source": f"preset {preset.get('name')!s} prior {field}={preset[field]}"}
    try:
        hist = histogram_prior(v)
    except ValueError as err:
        return {"prior": None, "source": f"no prior: {err} ({v.size} training values)"}
    return {"prior": hist.to_dict(),
            "source": f"histogram of the {v.size} training values ({len(hist.density)} bins)"}


def parse_prior(text: str) -> TrainingPrior:
    """``uniform:LOW:HIGH`` or ``gaussian:MEAN:STD`` (as given to ``--prior``)."""
    parts = text.split(":")
    try:
        if len(parts) == 3 and parts[0] == "uniform":
            return TrainingPrior.uniform(float(parts[1]), float(parts[2]))
        if len(parts) == 3 and parts[0] == "gaussian":
            return TrainingPrior.gaussian(float(parts[1]), float(parts[2]))
    except ValueError as err:
        raise DarklensError(f"--prior {text}: {err}") from None
    raise DarklensError(f"--prior {text}: use uniform:LOW:HIGH or gaussian:MEAN:STD")


def given_training_prior(target: str, text: str, values: np.ndarray,
                         source: str = "the data") -> dict[str, Any]:
    """The entry ``describe_training_prior`` would give, for a prior the user states
    (``--prior NAME=uniform:LOW:HIGH``); DataError if a training value lies outside its
    support (such a value cannot have been drawn from it)."""
    prior = parse_prior(text)
    v = np.asarray(values, dtype=np.float64)
    outside = int(np.sum((v < prior.low) | (v > prior.high)))
    if outside:
        raise DataError(f"{source}: {outside} of {v.size} training values of {target} lie "
                        f"outside the prior's support [{prior.low:g}, {prior.high:g}] "
                        f"(--prior {target}={text})")
    return {"prior": prior.to_dict(), "source": f"given (--prior {target}={text})"}


def prior_support(entry: dict | None) -> list[float] | None:
    """[low, high] of a recorded prior (``TrainingPrior.to_dict`` form), None if unbounded."""
    if not entry:
        return None
    prior = TrainingPrior.from_dict(entry)
    if not (math.isfinite(prior.low) and math.isfinite(prior.high)):
        return None
    return [prior.low, prior.high]
