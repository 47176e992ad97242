"""``Detector`` and ``create_detector``: train an anomaly detector on normal images, score any.

A thin wrapper over the calls ``darklens train`` and ``darklens score`` make: ``fit`` is
``darklens.train.detector_run`` (``split_sets``, ``train_detector``: the split, calibration
normals, record and ``train_run`` of ``darklens train --data``), ``score`` and ``load`` are
``darklens.models.scoring.RunScorer``. The run it trains is a run directory like the CLI's
(config.json, weights.pt, normal_stats.json, losses.csv), so ``darklens score``/``evaluate``
read what ``save`` writes and ``Detector.load`` reads what ``darklens train`` writes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from darklens.api._arrays import ImagesLike, as_images, as_lensdata
from darklens.api._rundir import RunDirHolder
from darklens.data.dataset import Split
from darklens.data.lensdata import LensData
from darklens.errors import DarklensError, DataError
from darklens.models.base import Detector as DetectorModule
from darklens.models.base import require_detector
from darklens.models.scoring import RunScorer
from darklens.train.config import TRAIN_KEYS
from darklens.train.detector_run import (
    data_record,
    instrument_options,
    split_sets,
    train_detector,
)
from darklens.train.loop import TrainResult


class Detector(RunDirHolder):
    """An anomaly detector: ``fit`` on normal images, ``score`` any (higher = more anomalous).

    Build one with :func:`create_detector` (or ``Detector(name, **options)``), or load a trained
    run with :meth:`Detector.load`. Detectors: ``dcae``, ``cvae``, ``aae``, ``rbm``,
    ``deep-svdd``, ``knn``, ``infotheoretic``, ``residual-chi2`` (docs/concepts.md).

    Attributes:
        name: the detector's registered name.
        options: detector options (e.g. ``latent_dim``), as ``darklens train --config``.
        train_options: training options (``TrainConfig`` fields such as ``epochs``, ``lr``).
        module: the trained ``torch.nn.Module`` (None before ``fit``).

    Examples:
        >>> import darklens as dl
        >>> d = dl.simulate("demo", 20, seed=0, n_pix=32)
        >>> m = dl.create_detector("dcae", latent_dim=8).fit(d, epochs=1, test_fraction=0.2)
        >>> m.score(d.select(m.split.test)).shape
        (30,)
    """

    def __init__(self, name: str, **options: Any) -> None:
        require_detector(name)
        self.name = name
        self.options = {k: v for k, v in options.items() if k not in TRAIN_KEYS}
        self.train_options = {k: v for k, v in options.items() if k in TRAIN_KEYS}
        self.module: DetectorModule | None = None
        self._split: Split | None = None
        self._result: TrainResult | None = None
        self._scorer: RunScorer | None = None

    def __repr__(self) -> str:
        return f"Detector({self.name!r}, {self._state()})"

    def _what(self) -> str:
        return f"detector {self.name}"

    def fit(self, data: ImagesLike | LensData, *, epochs: int | None = None,
            batch_size: int | None = None, lr: float | None = None, seed: int = 0,
            normal: str = "no_sub", val_fraction: float = 0.1, test_fraction: float = 0.0,
            cal_fraction: float = 0.1, normalise: str = "minmax", device: str = "cpu",
            progress: bool = False, out: str | os.PathLike[str] | None = None,
            **train_options: Any) -> Detector:
        """Train on the normal images of ``data`` (bare images all count as normal).

        The split is ``darklens train``'s (from ``seed``): the normal class is cut into
        training, validation (early stopping) and test fractions; anomalies are never
        trained on. ``self.split`` holds the indices. As ``darklens train``, a share of the
        training normals is held out as calibration normals (scored into the run's
        calibration.json, from which ``darklens score`` computes conformal p-values).

        Args:
            data: a LensData (its ``normal`` class is trained on) or images.
            epochs: training epochs (default: the detector's own).
            batch_size: images per batch (default: the detector's own).
            lr: learning rate (default: the detector's own).
            seed: seeds the split, the weights and every random draw of training.
            normal: the normal class of a LensData.
            val_fraction: share of the normal images for validation.
            test_fraction: share of the normal images held out (0: none, the default; 0.2
                as ``darklens train``, to score held-out normals of the same data).
            cal_fraction: share of the normal images taken out of the training part as
                calibration normals (0: none).
            normalise: ``minmax`` (per image, default), ``standard`` or ``none``.
            device: ``cpu``, ``cuda`` or ``auto``.
            progress: show a progress bar.
            out: a run directory to train in (checkpoints every epoch, as ``darklens train
                --out``); default a private temporary one (see :meth:`save`).
            **train_options: further ``TrainConfig`` fields (``scheduler``, ``patience``,
                ``max_minutes``, ...).

        Returns:
            The detector itself, trained.
        """
        lens = as_lensdata(data, normal)
        if test_fraction < 0 or val_fraction < 0:
            raise DarklensError("val_fraction and test_fraction must be >= 0")
        unknown = set(train_options) - TRAIN_KEYS
        if unknown:
            raise DarklensError(f"unknown training option(s): {', '.join(sorted(unknown))}")
        sets = split_sets(lens, normal, seed, val_fraction, test_fraction, cal_fraction,
                          normalise)
        if cal_fraction > 0 and sets.cal is None:
            raise DarklensError(f"cal_fraction {cal_fraction} leaves no calibration normals "
                                f"out of {sets.n_normal}")
        run_dir = self._use_run_dir(out)
        if (run_dir / "config.json").exists():
            raise DarklensError(f"{run_dir} already holds a finished run; choose another out")
        det_opts = dict(self.options)
        extra: dict[str, Any] = {"views": {"mode": "augment"}, "input": {"kind": "raw"}}
        inst = instrument_options(self.name, det_opts, None, lens, sets.image_size, seed)
        if inst is not None:
            extra["instrument"] = inst
        run = train_detector(self.name, det_opts, {**self.train_options, **train_options},
                             sets, out_dir=run_dir, seed=seed, normal=normal,
                             data=data_record(lens, source="python"), extra=extra,
                             epochs=epochs, batch_size=batch_size, lr=lr, device=device,
                             progress=progress, source=lens)
        self.module, self._result, self._split = run.detector, run.result, sets.split
        self._scorer = RunScorer(run.detector, sets.normaliser)
        self._run_dir = run_dir
        return self

    @property
    def split(self) -> Split:
        """The indices (``train``, ``val``, ``test``) into the data of the last ``fit``: the
        training part (calibration normals included), the validation part and the held-out
        test part, the images that may be scored fairly (``darklens train``'s split)."""
        if self._split is None:
            raise DarklensError(f"detector {self.name} has no split: it was not fitted here")
        return self._split

    @property
    def result(self) -> TrainResult:
        """How the last ``fit`` went: ``history`` (one row per epoch), ``epochs_run``,
        ``best_epoch``, ``stopped_early``, ``seconds``."""
        if self._result is None:
            raise DarklensError(f"detector {self.name} has no training result: it was not "
                                "fitted here")
        return self._result

    def score(self, images: ImagesLike | LensData, *, batch_size: int = 256,
              device: str = "cpu") -> npt.NDArray[np.float64]:
        """Anomaly scores, one per image (higher = more anomalous), as ``darklens score``.

        Images are normalised as in training (and, for a run trained on residual maps, fitted
        first). An image the detector could not score (residual-chi2: its smooth-lens fit
        failed) gets NaN.

        Args:
            images: a LensData, or images (N, C, H, W), (N, H, W) or (H, W), numpy or torch,
                of the size trained on.
            batch_size: images scored at a time.
            device: ``cpu``, ``cuda`` or ``auto``.

        Returns:
            float64 array (N,).
        """
        scorer = self._scoring()
        x = as_images(images)
        want = scorer.image_shape
        if want is not None and x.shape[1:] != want:
            raise DataError(f"images are {tuple(x.shape[1:])}, the detector was trained on "
                            f"{want}")
        return scorer.score(x, batch_size, device)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the trained run to a new directory ``path`` (the layout of ``darklens train
        --out``: config.json, weights.pt, normal_stats.json, losses.csv, checkpoint.pt).

        The copy is made beside ``path`` and renamed into place, so ``path`` never holds half
        a run; an existing non-empty ``path`` is refused.

        Returns:
            ``path``.
        """
        return self._save_run(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Detector:
        """A trained detector from a run directory (``darklens train --out`` or :meth:`save`).

        Weights are read as tensors only (``weights_only=True``); a missing, corrupt or
        untrusted run is a one-line ``CheckpointError``.
        """
        scorer = RunScorer.load(path)
        options = scorer.config["config"]
        det = cls(scorer.detector.name, **{k: v for k, v in options.items()
                                           if k not in ("image_size", "in_channels")})
        det.options = dict(options)
        det.module, det._scorer, det._run_dir = scorer.detector, scorer, Path(path)
        return det

    def _scoring(self) -> RunScorer:
        if self._scorer is None:
            raise DarklensError(f"{self._what()} is not trained: call fit() first")
        return self._scorer


def create_detector(name: str, **options: Any) -> Detector:
    """A new, untrained detector by name.

    Args:
        name: ``dcae``, ``cvae``, ``aae``, ``rbm``, ``deep-svdd``, ``knn``, ``infotheoretic``
            or ``residual-chi2``.
        **options: detector options (``latent_dim=16``) and training options (``epochs=5``,
            ``lr=1e-3``), flat as in ``darklens train --config``; a training option is any
            ``TrainConfig`` field, anything else goes to the detector.

    Returns:
        The detector; an unknown name is a one-line ``DarklensError``.

    Examples:
        >>> import darklens as dl
        >>> dl.create_detector("dcae", latent_dim=16)
        Detector('dcae', untrained)
    """
    return Detector(name, **options)

