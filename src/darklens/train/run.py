"""One way from options to a trained run: build, fit, score the normals, save.

``train_run`` is how ``darklens train``, ``darklens benchmark`` and ``darklens sweep`` train a
detector:

1. build: ``create_detector(name, image_size=..., in_channels=..., **options)`` after seeding
   every generator with the run's seed (bad options are one-line errors);
2. the training options: the detector's ``train_defaults``, then the caller's ``options``,
   then its ``overrides`` (seed, device, out_dir, ...); ``prepare(detector, values)`` may
   still edit them (the benchmark plans its epochs there, the CLI adds labelled anomalies);
3. fit: the one training loop (``darklens.train.loop.fit``);
4. when the run has a directory (``out_dir``) and this is rank 0: score the normal validation
   images and save the run there (``darklens.models.persistence.save_run``: config.json with
   ``extra`` plus the training options and result, weights.pt, normal_stats.json); with a
   ``cal_set``, also score those held-out calibration normals into calibration.json, from
   which ``darklens score`` computes conformal p-values. The calibration normals must be used
   neither for training nor for validation (early stopping picks the epoch on the validation
   images, and a detector may keep them in a memory bank), so that their scores are
   exchangeable with those of new normal images; ``calibration_split`` carves them from the
   training normals.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, Dataset

from darklens.data.dataset import ImageDataset
from darklens.errors import DarklensError
from darklens.models.base import Detector, create_detector
from darklens.models.persistence import save_calibration, save_run
from darklens.models.scoring import score_images
from darklens.train import distributed
from darklens.train.config import TRAIN_KEYS
from darklens.train.loop import TrainConfig, TrainResult, fit
from darklens.train.rng import seed_everything


@dataclass
class TrainedRun:
    """What ``train_run`` did; ``normal_scores`` is None when nothing was saved."""

    detector: Detector
    config: TrainConfig
    result: TrainResult
    normal_scores: np.ndarray | None = None
    calibration_scores: np.ndarray | None = None


def calibration_split(train_set: ImageDataset, n_cal: int, seed: int
                      ) -> tuple[ImageDataset, ImageDataset]:
    """(training, calibration): ``n_cal`` images drawn at random (from ``seed``) out of the
    training images, held out as calibration normals; both keep the dataset's normaliser."""
    idx = np.asarray(train_set.indices)
    if not 0 < n_cal < len(idx):
        raise DarklensError(f"cannot hold out {n_cal} calibration normals from {len(idx)} "
                            "training images (need at least one of each)")
    rng = np.random.default_rng([int(seed), 0xCA1])  # its own stream, apart from the split's
    cal = np.zeros(len(idx), dtype=bool)
    cal[rng.choice(len(idx), n_cal, replace=False)] = True
    return (ImageDataset(train_set.data, idx[~cal], train_set.normaliser),
            ImageDataset(train_set.data, idx[cal], train_set.normaliser))


def build_detector(name: str, image_size: int, in_channels: int, options: dict[str, Any],
                   seed: int) -> Detector:
    """The detector ``name`` with ``options``, its weights drawn after seeding with ``seed``."""
    seed_everything(seed)
    try:
        return create_detector(name, image_size=int(image_size), in_channels=int(in_channels),
                               **options)
    except (TypeError, ValueError) as err:
        raise DarklensError(f"bad options for detector {name}: {err}") from err


def train_values(detector: Detector, options: dict[str, Any],
                 overrides: dict[str, Any]) -> dict[str, Any]:
    """Training options: the detector's defaults < ``options`` < ``overrides``."""
    values = {k: v for k, v in detector.train_defaults.items() if k in TRAIN_KEYS}
    values.update(options)
    values.update(overrides)
    return values


def score_dataset(detector: Detector, dataset: Dataset, device: str,
                  batch_size: int = 256) -> np.ndarray:
    """Scores of every image of a dataset of (image, label), a batch at a time (never every
    image in memory at once)."""
    loader = DataLoader(dataset, batch_size=batch_size)
    parts = [score_images(detector, batch[0], batch_size, device) for batch in loader]
    return np.concatenate(parts) if parts else np.zeros(0)


def train_run(name: str, detector_options: dict[str, Any], train_options: dict[str, Any],
              train_set: Dataset, val_set: Dataset, *, image_size: int, in_channels: int,
              seed: int, overrides: dict[str, Any] | None = None,
              prepare: Callable[[Detector, dict[str, Any]], None] | None = None,
              fit_val: Dataset | None = None,
              extra: dict[str, Any] | None = None,
              cal_set: Dataset | None = None) -> TrainedRun:
    """Build, fit, score the normals and save (see the module docstring).

    ``val_set``: the normal validation images (early stopping, and the scores that calibrate
    the saved run); ``fit_val`` replaces it for the loop's validation loss only (native views);
    ``cal_set``: held-out normal calibration images (see the module docstring), or None.
    """
    detector = build_detector(name, image_size, in_channels, detector_options, seed)
    values = train_values(detector, train_options, {**(overrides or {}), "seed": seed})
    if prepare is not None:
        prepare(detector, values)
    cfg = TrainConfig.from_dict(values)
    result = fit(detector, train_set, val_set if fit_val is None else fit_val, cfg)
    run = TrainedRun(detector, cfg, result)
    if cfg.out_dir is None or distributed.rank() != 0:
        return run
    run.normal_scores = score_dataset(detector, val_set, cfg.device)
    record = dict(extra or {})
    record["train"] = asdict(cfg)
    record["world_size"] = distributed.world_size()
    record["result"] = {"epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
                        "best_val_loss": result.best_val_loss,
                        "stopped_early": result.stopped_early, "seconds": result.seconds}
    diagnostics = detector.diagnostics()  # e.g. the infotheoretic collapse watch
    if diagnostics is not None:
        record["diagnostics"] = diagnostics
    if cal_set is not None:
        run.calibration_scores = score_dataset(detector, cal_set, cfg.device)
        # before config.json, which save_run writes last and which marks the run finished
        save_calibration(cfg.out_dir, run.calibration_scores,
                         {"source": "held-out normal calibration images"})
    save_run(cfg.out_dir, detector, normal_scores=run.normal_scores, extra=record)
    return run
