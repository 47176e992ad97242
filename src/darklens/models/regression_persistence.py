"""A regression run directory: what was trained, on which images, and the weights of each member.

Layout (written by ``darklens.train.regression.train_regression``)::

    RUN/regression.json       config, targets, classes, image normalisation, target
                              standardisation, data fingerprint, member summaries
    RUN/split.json            indices (into the loaded training data) of train/val/test images
    RUN/member-K/checkpoint.pt  per-epoch training state (resume)
    RUN/member-K/losses.csv     one row per epoch (darklens.train.loop)
    RUN/member-K/weights.pt     final weights (best validation epoch), tensors only
    RUN/recalibration.json    the PIT recalibration fitted on the validation images
                              (``darklens.models.recalibration``; absent in older runs)

``load_regression_run`` rebuilds the ensemble without unpickling arbitrary objects
(``torch.load(..., weights_only=True)``); ``predict_images`` runs it (with test-time
augmentation) on a batch of images; ``stream_posteriors`` on every image of a file or folder,
read a batch at a time. Where the run has a recalibration, the posteriors they return are the
recalibrated ones unless ``recalibrate=False``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from darklens.data.dataset import Normaliser
from darklens.data.fingerprint import fingerprint
from darklens.data.lensdata import LensData
from darklens.data.stream import BadInput, ImageBatch, rebatch, stream_images
from darklens.errors import CheckpointError, DataError
from darklens.io import read_json_object
from darklens.models.recalibration import Recalibration, load_recalibration
from darklens.models.regressor import (
    PosteriorPrediction,
    Regressor,
    predict_ensemble,
    predict_posterior,
)
from darklens.models.training_prior import prior_support
from darklens.safe_load import load_state_into

RUN_JSON = "regression.json"
SPLIT_JSON = "split.json"
WEIGHTS = "weights.pt"
GRID_POINTS = 201  # points of each target's marginal density (population inference)


def member_dir(run_dir: str | os.PathLike, k: int) -> Path:
    return Path(run_dir) / f"member-{k}"


def is_training_data(data: LensData, info: dict[str, Any]) -> bool:
    """Whether ``data`` are the images the run (its ``regression.json``, ``info``) trained on.

    Runs record ``darklens.data.fingerprint.fingerprint``; runs written before it was the one
    fingerprint recorded the image shape hashed first (``_shape_fingerprint``), which is still
    recognised, so that those runs keep finding their training data.
    """
    recorded = info.get("data", {}).get("fingerprint")
    if recorded is None:
        return False
    return recorded == fingerprint(data) or recorded == _shape_fingerprint(data)


def _shape_fingerprint(data: LensData) -> str:
    """The fingerprint of regression runs written before ``darklens.data.fingerprint``."""
    h = hashlib.sha256()
    h.update(str(data.images.shape).encode())
    h.update(np.ascontiguousarray(data.images, dtype=np.float32).tobytes())
    h.update(np.ascontiguousarray(data.labels, dtype=np.int64).tobytes())
    return h.hexdigest()


def read_json(path: Path, what: str) -> dict[str, Any]:
    """A JSON object of a regression run's folder (clear error if missing or invalid)."""
    return read_json_object(path, what, f"is {path.parent} a regression run?")


def read_run_info(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``regression.json`` of a run, checked for the keys needed to rebuild it."""
    run = Path(run_dir)
    if not run.is_dir():
        raise CheckpointError(f"{run}: no such run directory")
    info = read_json(run / RUN_JSON, "run description")
    for key in ("targets", "model", "normaliser", "members"):
        if key not in info:
            raise CheckpointError(f"{run / RUN_JSON}: missing key {key!r}")
    return info


def read_split(run_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """Train/val/test indices recorded by the training run."""
    obj = read_json(Path(run_dir) / SPLIT_JSON, "split indices")
    try:
        return {k: np.asarray(obj[k], dtype=np.int64) for k in ("train", "val", "test")}
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{Path(run_dir) / SPLIT_JSON}: bad split ({err})") from err


def build_model(info: dict[str, Any]) -> Regressor:
    """An untrained regressor of the run's configuration."""
    try:
        return Regressor(**info["model"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"bad model config in {RUN_JSON}: {err}") from err


def load_weights(model: Regressor, path: Path) -> Regressor:
    return load_state_into(model, path, "the model", "missing weights (did training finish?)")


@dataclass
class RegressionRun:
    """A trained ensemble (one member without ``--ensemble``) and its description."""

    models: list[Regressor]
    info: dict[str, Any]
    normaliser: Normaliser
    recalibration: Recalibration | None = None

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(self.info["targets"])

    @property
    def posterior(self) -> str:
        return self.models[0].posterior

    def support(self) -> list[list[float]] | None:
        """Each target's [low, high] (the model's, else the recorded training prior's), or
        None if one has none."""
        if self.models[0].support is not None:
            return [list(s) for s in self.models[0].support]
        priors = self.info.get("training_prior") or {}
        try:
            sup = [prior_support((priors.get(t) or {}).get("prior")) for t in self.targets]
        except ValueError:
            return None
        return sup if all(s is not None for s in sup) else None

    def grids(self, n: int = GRID_POINTS) -> np.ndarray | None:
        """(T, n) evaluation points of each target's marginal density, spanning its support."""
        sup = self.support()
        if sup is None:
            return None
        return np.stack([np.linspace(lo, hi, n) for lo, hi in sup])


def load_regression_run(run_dir: str | os.PathLike) -> RegressionRun:
    """Rebuild every member of a finished run (eval mode, CPU)."""
    info = read_run_info(run_dir)
    members = info["members"]
    if not members:
        raise CheckpointError(f"{Path(run_dir) / RUN_JSON}: no trained members")
    models = [load_weights(build_model(info), member_dir(run_dir, k) / WEIGHTS)
              for k in range(len(members))]
    return RegressionRun(models, info, Normaliser.from_dict(info["normaliser"]),
                         load_recalibration(run_dir, tuple(info["targets"])))


def _check_images(run: RegressionRun, images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] != 1:
        raise DataError(f"expected images of shape (N, 1, H, W), got {images.shape}")
    shape = run.info.get("image_shape")
    if shape and list(images.shape[2:]) != list(shape):
        raise DataError(f"images are {images.shape[2]}x{images.shape[3]} but the model was "
                        f"trained on {shape[0]}x{shape[1]}")
    return images


def predict_images(run: RegressionRun, images: np.ndarray, tta: bool = True,
                   batch_size: int = 256, device: str = "cpu", recalibrate: bool = True
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(mean, sigma), each (N, T), for images (N, 1, H, W) in the run's physical units."""
    images = _check_images(run, images)
    if run.posterior != "gaussian" or (recalibrate and run.recalibration is not None):
        pred = predict_posteriors(run, images, tta, n_samples=512, density=False,
                                  batch_size=batch_size, device=device,
                                  recalibrate=recalibrate)
        return pred.mean, np.sqrt(pred.var)
    for m in run.models:
        m.to(device).eval()
    means, sigmas = [], []
    for lo in range(0, len(images), batch_size):
        x = torch.from_numpy(run.normaliser(images[lo:lo + batch_size])).to(device)
        mu, var = predict_ensemble(run.models, x, tta=tta)
        means.append(mu.cpu().numpy())
        sigmas.append(np.sqrt(var.cpu().numpy()))
    t = len(run.targets)
    if not means:
        return np.zeros((0, t)), np.zeros((0, t))
    return np.concatenate(means), np.concatenate(sigmas)


def predict_posteriors(run: RegressionRun, images: np.ndarray, tta: bool = True,
                       n_samples: int = 256, density: bool = True, seed: int = 0,
                       batch_size: int = 256, device: str = "cpu",
                       generator: torch.Generator | None = None,
                       recalibrate: bool = True) -> PosteriorPrediction:
    """Every image's posterior (``predict_posterior``): mean, variance, ``n_samples`` draws
    and, with ``density`` and a run whose targets have a support, the marginal densities on
    ``run.grids()``. Draws come from one generator seeded with ``seed`` (or ``generator``,
    carried over calls that predict one data set in parts), so a call with the same images,
    seed and batch size gives the same draws. With ``recalibrate`` and a run that has a
    recalibration, the recalibrated posteriors (``recalibrated``)."""
    images = _check_images(run, images)
    for m in run.models:
        m.to(device).eval()
    recal = run.recalibration if recalibrate else None
    grids = run.grids() if density or recal is not None else None
    gen = generator if generator is not None else torch.Generator().manual_seed(seed)
    parts = []
    for lo in range(0, len(images), batch_size):
        x = torch.from_numpy(run.normaliser(images[lo:lo + batch_size])).to(device)
        parts.append(predict_posterior(run.models, x, tta, n_samples, grids, gen))
    if not parts:
        raise DataError("no images to predict")
    pred = PosteriorPrediction(
        np.concatenate([p.mean for p in parts]), np.concatenate([p.var for p in parts]),
        np.concatenate([p.samples for p in parts]),
        None if grids is None else np.concatenate([p.density for p in parts]))
    if recal is not None:
        pred = recalibrated(pred, recal, grids)
    if not density:
        pred.density = None
    return pred


def recalibrated(pred: PosteriorPrediction, recal: Recalibration,
                 grids: np.ndarray | None) -> PosteriorPrediction:
    """``pred`` with every posterior recalibrated (``darklens.models.recalibration``): draws
    and densities mapped; mean and variance of the recalibrated densities on the grid (from
    the draws where there is none)."""
    if grids is None or pred.density is None:
        samples = recal.apply_samples(pred.samples)
        return PosteriorPrediction(samples.mean(1).astype(np.float64),
                                   samples.var(1).astype(np.float64), samples, None)
    samples = recal.apply_samples(pred.samples, grids, pred.density)
    dens = recal.apply_density(grids, pred.density)
    g = np.asarray(grids, np.float64)[None]
    mean = np.trapezoid(dens * g, g, axis=-1)
    var = np.maximum(np.trapezoid(dens * (g - mean[..., None]) ** 2, g, axis=-1), 0.0)
    return PosteriorPrediction(mean, var, samples, dens)


def stream_posteriors(run: RegressionRun, path: str | os.PathLike, tta: bool = True,
                      n_samples: int = 256, seed: int = 0, batch_size: int = 256,
                      device: str = "cpu", on_bad: str = "stop", recalibrate: bool = True
                      ) -> Iterator[tuple[ImageBatch, PosteriorPrediction] | BadInput]:
    """The posteriors (no densities) of every image at ``path``, read ``batch_size`` at a
    time (:mod:`darklens.data.stream`; memory does not grow with the data): each batch with
    its prediction, in file order. The batches are cut as ``predict_posteriors`` cuts
    ``load_dataset(path)``'s images and share one generator seeded with ``seed``, so the draws
    are the same as those of that call. A bad file or shard image is a ``DataError`` naming
    it (``on_bad="stop"``) or a ``BadInput`` in the stream (``"skip"``); so is an image of
    another size than the run's."""
    shape = run.info.get("image_shape")
    gen = torch.Generator().manual_seed(seed)
    items = stream_images(path, batch_size, (1, *shape) if shape else None, on_bad)
    for item in rebatch(items, batch_size):
        if isinstance(item, BadInput):
            yield item
            continue
        yield item, predict_posteriors(run, item.images, tta, n_samples, density=False,
                                       batch_size=batch_size, device=device, generator=gen,
                                       recalibrate=recalibrate)
