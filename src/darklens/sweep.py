"""Hyperparameter sweeps with Optuna over any detector or training option.

A parameter is ``NAME=KIND:ARGS``: ``uniform:LO:HI``, ``loguniform:LO:HI``, ``int:LO:HI`` or
``choice:A,B,...`` (values parsed as JSON where they can be: numbers, true/false). A name that
``TrainConfig`` knows (lr, batch_size, epochs, ...) is a training option; any other name is a
detector option.

Objectives (the study records which, and a resumed study must keep it):

- ``pseudo_auroc`` (label-free, maximised): for a detector that exposes a label-free criterion
  (``diagnostics()["pseudo_auroc"]`` of its selected score, e.g. the infotheoretic detector's
  AUROC between normal validation images and patch-swapped versions of them). No anomaly label
  is used.
- ``val_loss`` (label-free, minimised): the best loss on normal validation images, for any
  other detector. It only compares settings that leave the loss's definition unchanged (an
  entropy weight, for one, changes it); the output says so.
- ``labelled_auroc`` (maximised), only with ``labelled_validation``: the AUROC (every anomaly
  class against the normal class) on a labelled validation set: the validation part of the
  run's split when it is the training data itself, otherwise every image of that set. Keep the
  final test images out of it.

Studies live in any Optuna storage (``sqlite:///sweep.db`` here; a PostgreSQL URL works the
same way for many workers) and resume (``load_if_exists``): a rerun adds trials.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from darklens.data.dataset import Normaliser
from darklens.data.fingerprint import fingerprint
from darklens.data.lensdata import LensData
from darklens.errors import DarklensError
from darklens.evaluate.metrics import anomaly_metrics
from darklens.models.base import create_detector
from darklens.models.scoring import score_images
from darklens.train.config import TRAIN_KEYS
from darklens.train.data import detection_data, detection_split
from darklens.train.detector_run import physical_pseudo
from darklens.train.loop import TrainingDiverged
from darklens.train.run import train_run

KINDS = ("uniform", "loguniform", "int", "choice")
OBJECTIVES = {
    "pseudo_auroc": ("maximize", "label-free: the detector's own pseudo-AUROC (normal "
                     "validation images against patch-swapped copies; no anomaly labels)"),
    "val_loss": ("minimize", "label-free: best loss on normal validation images (compares "
                 "only settings that keep the loss's definition; no anomaly labels)"),
    "labelled_auroc": ("maximize", "LABELLED: AUROC on the labelled validation set"),
}


@dataclass(frozen=True)
class Param:
    """One searched parameter."""

    name: str
    kind: str
    args: tuple[Any, ...]

    def suggest(self, trial: Any) -> Any:
        if self.kind == "uniform":
            return trial.suggest_float(self.name, self.args[0], self.args[1])
        if self.kind == "loguniform":
            return trial.suggest_float(self.name, self.args[0], self.args[1], log=True)
        if self.kind == "int":
            return trial.suggest_int(self.name, self.args[0], self.args[1])
        return trial.suggest_categorical(self.name, list(self.args))


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_param(text: str) -> Param:
    """``beta=loguniform:1e-4:1`` -> Param; a clear error for anything else."""
    name, sep, spec = text.partition("=")
    kind, _, rest = spec.partition(":")
    name, kind = name.strip(), kind.strip()
    if not sep or not name or kind not in KINDS or not rest:
        raise DarklensError(f"--param {text!r}: expected NAME=KIND:ARGS with KIND one of "
                            f"{', '.join(KINDS)} (e.g. beta=loguniform:1e-4:1, "
                            "critic=choice:cosine,bilinear)")
    if kind == "choice":
        values = tuple(_value(v.strip()) for v in rest.split(","))
        return Param(name, kind, values)
    parts = rest.split(":")
    try:
        lo, hi = (int(p) if kind == "int" else float(p) for p in parts)
    except ValueError as err:
        raise DarklensError(f"--param {text!r}: {kind} needs two numbers LO:HI") from err
    if not lo < hi or (kind == "loguniform" and lo <= 0):
        raise DarklensError(f"--param {text!r}: need LO < HI (and LO > 0 for loguniform)")
    return Param(name, kind, (lo, hi))


def split_params(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{name: value} -> the `darklens train --config` form {"detector": .., "train": ..}."""
    return {"detector": {k: v for k, v in values.items() if k not in TRAIN_KEYS},
            "train": {k: v for k, v in values.items() if k in TRAIN_KEYS}}


def objective_kind(detector_name: str, labelled: bool, image_size: int) -> str:
    """Which objective a sweep of this detector uses (see the module docstring)."""
    if labelled:
        return "labelled_auroc"
    det = create_detector(detector_name, image_size=image_size)
    return "pseudo_auroc" if callable(getattr(det, "diagnostics", None)) else "val_loss"


@dataclass
class SweepSetup:
    """What every trial shares."""

    detector: str
    data: LensData
    params: list[Param]
    fixed: dict[str, Any]  # fixed options, `train --config` form
    objective: str
    seed: int = 0
    epochs: int | None = None
    max_minutes: float | None = None  # per trial
    labelled: LensData | None = None
    normal: str = "no_sub"
    normalise: str = "minmax"
    device: str = "cpu"


def run_trial(setup: SweepSetup, values: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    """Train once with ``values``; (objective value, details)."""
    data = setup.data
    opts = split_params(values)
    det_opts = {**setup.fixed.get("detector", {}), **opts["detector"]}
    train_opts = {**setup.fixed.get("train", {}), **opts["train"]}
    det_data = detection_data(data, setup.normal, setup.seed, normalisation=setup.normalise)
    overrides: dict[str, Any] = {"progress": False, "device": setup.device,
                                 "max_minutes": setup.max_minutes}
    if setup.epochs is not None:
        overrides["epochs"] = setup.epochs
    run = train_run(setup.detector, det_opts, train_opts, det_data.train, det_data.val,
                    image_size=int(data.images.shape[-1]), in_channels=int(data.images.shape[1]),
                    seed=setup.seed, overrides=overrides,
                    prepare=lambda det, values: physical_pseudo(
                        det, data, det_data.split, det_data.normaliser, setup.normal,
                        setup.seed))
    det, result = run.detector, run.result
    details: dict[str, Any] = {"epochs_run": result.epochs_run, "seconds": result.seconds,
                               "best_val_loss": result.best_val_loss}
    if setup.objective == "val_loss":
        value = result.best_val_loss
        if value is None:
            raise DarklensError("no validation loss (no validation images or nothing trained)")
    elif setup.objective == "pseudo_auroc":
        diag = det.diagnostics()
        details["diagnostics"] = diag
        value = diag["pseudo_auroc"].get(diag.get("selected_score"), float("nan"))
    else:
        value, details["n"] = _labelled_auroc(setup, det, det_data.normaliser)
    return float(value), details


def _labelled_auroc(setup: SweepSetup, det: Any, normaliser: Normaliser) -> tuple[float, dict]:
    lab = setup.labelled
    assert lab is not None
    if fingerprint(lab) == fingerprint(setup.data):  # the validation part of the same split
        idx = detection_split(lab, setup.normal, setup.seed).val
    else:
        idx = np.flatnonzero(lab.labels >= 0)
    scores = score_images(det, normaliser(lab.images[idx]), device=setup.device)
    m = anomaly_metrics(scores, lab.labels[idx], lab.class_names, setup.normal)
    return m["auroc"]["all"], m["n"]


def run_sweep(setup: SweepSetup, storage: str, study_name: str, trials: int,
              sampler_seed: int = 0, log: Callable[[str], None] = print) -> Any:
    """Create or resume the study and run ``trials`` more trials; returns the study."""
    import optuna

    direction, _ = OBJECTIVES[setup.objective]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=study_name, storage=storage, direction=direction,
                                load_if_exists=True,
                                sampler=optuna.samplers.TPESampler(seed=sampler_seed + len(
                                    _existing_trials(storage, study_name))))
    kept = study.user_attrs.get("objective")
    if kept is not None and kept != setup.objective:
        raise DarklensError(f"study {study_name!r} in {storage} optimises {kept}, not "
                            f"{setup.objective}; use another --study-name")
    if study.direction.name.lower() != direction:
        raise DarklensError(f"study {study_name!r} was created to {study.direction.name}")
    kept_det = study.user_attrs.get("detector")
    if kept_det is not None and kept_det != setup.detector:
        raise DarklensError(f"study {study_name!r} sweeps detector {kept_det}, not "
                            f"{setup.detector}")
    study.set_user_attr("objective", setup.objective)
    study.set_user_attr("detector", setup.detector)
    study.set_user_attr("fixed", setup.fixed)
    done_before = len(study.trials)

    def objective(trial: Any) -> float:
        values = {p.name: p.suggest(trial) for p in setup.params}
        t0 = time.perf_counter()
        try:
            value, details = run_trial(setup, values)
        except TrainingDiverged as err:
            log(f"trial {trial.number}: {values} diverged ({err}); marked failed")
            raise optuna.TrialPruned(str(err)) from err
        trial.set_user_attr("details", json.loads(json.dumps(details, default=float)))
        log(f"trial {trial.number}: {setup.objective} {value:.4f} with "
            + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in values.items())
            + f" ({details['epochs_run']} epochs, {time.perf_counter() - t0:.0f} s)")
        if not math.isfinite(value):
            raise optuna.TrialPruned("objective is not finite")
        return value

    study.optimize(objective, n_trials=trials)
    log(f"study {study_name!r}: {len(study.trials)} trials ({len(study.trials) - done_before} "
        "new)")
    return study


def _existing_trials(storage: str, study_name: str) -> list:
    """Trials already in the study (so that a resumed sampler draws new points)."""
    import optuna

    try:
        return optuna.load_study(study_name=study_name, storage=storage).trials
    except KeyError:
        return []


def best_config(study: Any, fixed: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """The best trial's options (plus the fixed ones) in the `darklens train --config` form."""
    best = split_params(study.best_trial.params)
    fixed = fixed or {}
    return {"detector": {**fixed.get("detector", {}), **best["detector"]},
            "train": {**fixed.get("train", {}), **best["train"]}}
