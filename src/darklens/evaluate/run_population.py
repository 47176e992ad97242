"""Population-level inference with a trained regression run (``darklens regress population``).

``population_of_run(run_dir, data_path)`` predicts every image of the data that belongs to the
run's classes (with the run's ensemble and, unless ``tta=False``, 8-fold test-time
augmentation), then combines the N per-lens Gaussians into one population quantity with
``darklens.evaluate.hierarchical`` (each lens's posterior density on the run's grid over the
target's support, whatever its shape, reweighted by the training prior recorded in the run,
``run_training_prior``; runs without a support: the Gaussian closed forms of
``darklens.evaluate.population``):

- ``model="mean"`` (default): the location m of a Gaussian population y_i ~ N(m, tau^2)
  (truncated to the support), the scatter tau marginalised (or fixed with ``scatter``) —
  e.g. the mean substructure fraction;
- ``model="shared"``: one value shared by every lens — e.g. one axion mass.

The result says whether the data constrain the answer (``constrained``; else "not
constrained" with the 95% interval, or a one-sided ``limit``).

If the data are the run's training data (same fingerprint), only its held-out test images are
used, as in ``darklens regress evaluate``. Where the data carry the target for every lens used,
the result also gives their true mean and the pull (estimate - true mean) / sigma; for
``mean`` the true mean of the N lenses differs from the population's m by about tau/sqrt(N),
which the posterior of m includes, so the pull is then, if anything, conservative.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from darklens import __version__
from darklens.data.formats import UNLABELLED, load_dataset
from darklens.data.lensdata import LensData
from darklens.data.targets import regression_subset
from darklens.errors import CheckpointError, DarklensError, DataError
from darklens.evaluate.hierarchical import infer_mean_scatter, infer_shared
from darklens.evaluate.population import infer_population_mean, infer_shared_value
from darklens.models.regression_persistence import (
    RUN_JSON,
    RegressionRun,
    is_training_data,
    load_regression_run,
    predict_images,
    predict_posteriors,
    read_split,
)
from darklens.models.training_prior import TrainingPrior, describe_training_prior

MODELS = ("mean", "shared")
DIVISORS = ("effective", "training")


def _recompute_prior(run_dir: str | os.PathLike, info: dict[str, Any],
                     target: str) -> dict[str, Any] | None:
    """The prior of a run that did not record it, from its training data if still unchanged."""
    source = info.get("data", {}).get("source")
    if not source or not Path(source).exists():
        return None
    try:
        data = load_dataset(source)
    except DarklensError:
        return None
    if not is_training_data(data, info):
        return None
    targets = list(info["targets"])
    cfg = info.get("config", {})
    subset = regression_subset(data, targets, cfg.get("classes"), source,
                               skip_nan=bool(cfg.get("skip_nan", True)))  # older runs: skipped
    train = np.isin(subset.indices, read_split(run_dir)["train"])
    preset = data.attrs.get("preset") if isinstance(data.attrs, dict) else None
    entry = describe_training_prior(target, subset.values[train, targets.index(target)], preset)
    return {**entry, "source": f"{entry['source']} (recomputed from the training data)"}


def run_training_prior(run_dir: str | os.PathLike, info: dict[str, Any],
                       target: str) -> tuple[TrainingPrior, str]:
    """The training prior of ``target`` recorded in a run (for runs trained before priors were
    recorded: recomputed from their training data if unchanged) and where it comes from;
    DarklensError if there is none (``--prior`` then gives it)."""
    entry = (info.get("training_prior") or {}).get(target) or \
        _recompute_prior(run_dir, info, target)
    if entry is None:
        raise DarklensError(f"{run_dir}: records no training prior for {target} (trained before "
                            "priors were recorded, and its training data are gone or changed);"
                            " give it with --prior uniform:LOW:HIGH or gaussian:MEAN:STD")
    if entry.get("prior") is None:
        raise DarklensError(f"{run_dir}: no training prior for {target}: {entry.get('source')};"
                            " give it with --prior")
    try:
        return TrainingPrior.from_dict(entry["prior"]), str(entry.get("source", ""))
    except ValueError as err:
        raise DarklensError(f"{Path(run_dir) / RUN_JSON}: training_prior of {target}: "
                            f"{err}") from None


def load_run_for_population(run_dir: str | os.PathLike) -> RegressionRun:
    """``load_regression_run`` with a plain answer for a folder that is another kind of run."""
    run = Path(run_dir)
    if run.is_dir() and not (run / RUN_JSON).exists():
        if (run / "config.json").exists() and (run / "weights.pt").exists():
            raise DarklensError(f"{run} is a detector run (darklens train), not a regression "
                                "run (darklens regress train)")
        raise DarklensError(f"{run} is not a regression run: no {RUN_JSON} (train one with "
                            "darklens regress train)")
    return load_regression_run(run)


def choose_target(run: RegressionRun, run_dir: str | os.PathLike, target: str | None) -> str:
    """The target to combine: the one given, or the run's only target."""
    if target is None:
        if len(run.targets) > 1:
            raise DarklensError(f"{run_dir} predicts {', '.join(run.targets)}: choose one with "
                                "--target")
        return run.targets[0]
    if target not in run.targets:
        raise DarklensError(f"{run_dir} does not predict {target}; it predicts "
                            f"{', '.join(run.targets)}")
    return target


def population_images(run: RegressionRun, run_dir: str | os.PathLike, data: LensData,
                      data_path: str | os.PathLike) -> tuple[np.ndarray, str]:
    """Indices of the images to combine and a sentence saying which: the images of the run's
    classes (every image if the data carry no classes), only the held-out test split if the
    data are the run's training data."""
    if len(data) == 0:
        raise DataError(f"{data_path}: holds no images")
    classes = list(run.info.get("config", {}).get("classes") or [])
    if np.all(data.labels == UNLABELLED) or not classes:
        idx, what = np.arange(len(data)), "images"
    else:
        ids = [i for i, c in enumerate(data.class_names) if c in classes]
        idx = np.flatnonzero(np.isin(data.labels, ids))
        what = f"{', '.join(classes)} images"
        if idx.size == 0:
            raise DataError(f"{data_path}: no images of class {', '.join(classes)} (the classes "
                            f"{run_dir} was trained on)")
    if is_training_data(data, run.info):
        idx = idx[np.isin(idx, read_split(run_dir)["test"])]
        if idx.size == 0:
            raise DataError(f"{data_path} is the training data of {run_dir}, whose test split is "
                            "empty; use separately simulated images")
        return idx, (f"the {idx.size} held-out test {what} of the training data "
                     f"(indices in {Path(run_dir) / 'split.json'})")
    return idx, f"all {idx.size} {what} of {data_path}"


def prior_std(prior: TrainingPrior) -> float:
    """Standard deviation of a training prior (a histogram's bins taken as uniform)."""
    if prior.kind == "uniform":
        return (prior.high - prior.low) / 12**0.5
    if prior.kind == "gaussian":
        return prior.std
    edges, dens = np.asarray(prior.edges), np.asarray(prior.density)
    width, centre = np.diff(edges), 0.5 * (edges[1:] + edges[:-1])
    w = dens * width / np.sum(dens * width)
    mean = np.sum(w * centre)
    return float(np.sqrt(np.sum(w * ((centre - mean) ** 2 + width**2 / 12))))


def uninformative_warning(sigma: np.ndarray, prior: TrainingPrior, target: str,
                          ratio: float = 0.8) -> str | None:
    """A warning when the lenses' sigmas are about as wide as the training prior: the network
    then returns roughly the prior for every lens, which dividing out a (non-Gaussian) prior
    does not cancel, so N lenses concentrate on the prior's mean whatever the truth."""
    spread = prior_std(prior)
    mean_sigma = float(np.mean(sigma))
    if mean_sigma < ratio * spread:
        return None
    return (f"the lenses' sigmas ({mean_sigma:.3g} on average) are about the training prior's "
            f"spread ({spread:.3g}): the run learned little about {target}, and the combined "
            "estimate then sits near the prior's mean whatever the truth")


def population_of_run(run_dir: str | os.PathLike, data_path: str | os.PathLike,
                      target: str | None = None, model: str = "mean",
                      scatter: float | None = None, prior: TrainingPrior | None = None,
                      tta: bool = True, device: str = "cpu",
                      divide_by: str = "effective", recalibrate: bool = True
                      ) -> dict[str, Any]:
    """Predict the data with a run and infer the population quantity (see the module doc).

    Returns a JSON-able dict: ``estimate``, ``sigma``, ``median``, ``interval_68``,
    ``interval_95``, ``n_lenses``, ``true_mean`` and ``pull`` (None without labels), the
    inverse-variance ``naive_mean``/``naive_sigma`` (training prior not divided out), the
    prior used and its source, what was predicted, and a ``warning`` (None if all is well)
    when the per-lens sigmas are as wide as the prior (``uninformative_warning``).

    ``divide_by``: ``effective`` (default) divides out the prior the network learned (the mean
    posterior of its validation images, recorded at training; ``effective_prior``) where the
    run recorded one and no ``prior`` is given; ``training`` the nominal training prior.

    ``recalibrate``: use the run's recalibrated posteriors where it has a recalibration
    (``darklens.models.recalibration``), and then the effective prior of those."""
    if divide_by not in DIVISORS:
        raise DarklensError(f"unknown --divide-by {divide_by!r}; use {' or '.join(DIVISORS)}")
    if model not in MODELS:
        raise DarklensError(f"unknown population model {model!r}; use {' or '.join(MODELS)}")
    if scatter is not None and (model != "mean" or not scatter >= 0):
        raise DarklensError("--scatter (>= 0) goes with --model mean")
    run = load_run_for_population(run_dir)
    target = choose_target(run, run_dir, target)
    if prior is None:
        prior, prior_source = run_training_prior(run_dir, run.info, target)
    else:
        prior_source = "given (--prior)"
    divisor, divisor_source = prior, prior_source
    recalibrated = recalibrate and run.recalibration is not None
    key = "effective_prior_recalibrated" if recalibrated else "effective_prior"
    effective = (run.info.get(key) or {}).get(target)
    if divide_by == "effective" and effective and prior_source != "given (--prior)":
        try:
            divisor = TrainingPrior.from_dict(effective["prior"])
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{Path(run_dir) / RUN_JSON}: effective_prior of {target}: "
                                  f"{err}") from None
        divisor_source = f"effective prior: {effective.get('source', '')}"
    data = load_dataset(data_path)
    idx, used = population_images(run, run_dir, data, data_path)
    j = run.targets.index(target)
    grids = run.grids()
    method = "gaussian closed form (run without a target support)"
    try:
        if grids is not None:  # any posterior shape: reweighting on the density grid
            pred = predict_posteriors(run, data.images[idx], tta=tta, n_samples=8,
                                      device=device, recalibrate=recalibrate)
            mu, sd = pred.mean[:, j], np.sqrt(pred.var[:, j])
            method = "importance reweighting of the per-lens densities on a grid"
            if model == "shared":
                hres = infer_shared(grids[j], pred.density[:, j], divisor, parameter=target)
            else:
                hres = infer_mean_scatter(grids[j], pred.density[:, j], divisor,
                                          scatter=scatter, parameter=target)
            res, verdict = hres.result, hres.to_dict()
        else:
            divisor_source = prior_source
            mean, sigma = predict_images(run, data.images[idx], tta=tta, device=device,
                                         recalibrate=recalibrate)
            mu, sd = mean[:, j].astype(np.float64), sigma[:, j].astype(np.float64)
            if model == "shared":
                res = infer_shared_value(mu, sd, prior, parameter=target)
            else:
                res = infer_population_mean(mu, sd, prior, scatter=scatter, parameter=target)
            verdict = {"constrained": None, "contraction": None, "limit": None,
                       "scatter": None}
    except ValueError as err:
        raise CheckpointError(f"{run_dir}: cannot combine its predictions of {target}: {err}"
                              ) from None
    truth = None
    if target in data.metadata and np.asarray(data.metadata[target]).ndim == 1:
        values = np.asarray(data.metadata[target], dtype=np.float64)[idx]
        if np.isfinite(values).all():
            truth = values
    w = 1.0 / sd**2
    true_mean = float(truth.mean()) if truth is not None else None
    return {
        "run": str(run_dir), "data": str(data_path), "target": target, "model": model,
        "scatter": scatter, "n_lenses": res.n_lenses,
        "estimate": res.mean, "sigma": res.std, "median": res.median,
        "interval_68": list(res.interval_68), "interval_95": list(res.interval_95),
        "true_mean": true_mean,
        "true_std": float(truth.std()) if truth is not None else None,
        "pull": (res.mean - true_mean) / res.std if true_mean is not None and res.std > 0
        else None,
        "naive_mean": float(np.sum(w * mu) / w.sum()), "naive_sigma": float(w.sum() ** -0.5),
        "mean_lens_sigma": float(sd.mean()),
        "constrained": verdict["constrained"], "contraction": verdict["contraction"],
        "limit": verdict["limit"], "scatter_posterior": verdict["scatter"], "method": method,
        "prior": prior.to_dict(), "prior_source": prior_source,
        "divided_by": divisor_source,
        "warning": uninformative_warning(sd, prior, target),
        "used": used, "tta": tta, "ensemble": len(run.models),
        "recalibrated": recalibrated,
        "darklens_version": __version__,
    }
