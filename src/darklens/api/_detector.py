"""``Detector`` and ``create_detector``: train an anomaly detector on normal images, score any.

A thin wrapper over what ``darklens train`` and ``darklens score`` run: ``fit`` is
``darklens.train.run.train_run`` on the split of ``darklens.train.data.detection_data``, and
the run it trains is a run directory like the CLI's (config.json, weights.pt,
normal_stats.json, losses.csv), so ``darklens score``/``evaluate`` read what ``save`` writes and
``Detector.load`` reads what ``darklens train`` writes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from darklens.api._arrays import ImagesLike, as_images, as_lensdata
from darklens.api._rundir import TempRunDir, copy_run
from darklens.data.dataset import Normaliser, Split
from darklens.data.fingerprint import fingerprint
from darklens.data.lensdata import LensData
from darklens.errors import DarklensError, DataError
from darklens.fit.instrument import instrument_for_data
from darklens.fit.residual_input import ResidualInput, load_for_run
from darklens.models.base import Detector as DetectorModule
from darklens.models.base import detector_class, require_detector
from darklens.models.persistence import load_run, read_run_config
from darklens.models.scoring import score_images
from darklens.train.config import TRAIN_KEYS
from darklens.train.data import detection_data
from darklens.train.loop import TrainResult
from darklens.train.run import calibration_split, train_run


class Detector:
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
        self._normaliser = Normaliser("none")
        self._transform: ResidualInput | None = None
        self._run_dir: Path | None = None
        self._temp: TempRunDir | None = None

    def __repr__(self) -> str:
        state = "untrained" if self.module is None else f"trained, run in {self._run_dir}"
        return f"Detector({self.name!r}, {state})"

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
        det_data = detection_data(lens, normal, seed, val_fraction, test_fraction, normalise)
        n_normal = int((lens.labels == lens.class_names.index(normal)).sum())
        n_cal = int(round(cal_fraction * n_normal))
        if cal_fraction < 0 or (cal_fraction > 0 and n_cal == 0):
            raise DarklensError(f"cal_fraction {cal_fraction} leaves no calibration normals "
                                f"out of {n_normal}")
        train_set, cal_set = det_data.train, None
        if n_cal:
            train_set, cal_set = calibration_split(det_data.train, n_cal, seed)
        size, channels = int(lens.images.shape[-1]), int(lens.images.shape[1])
        unknown = set(train_options) - TRAIN_KEYS
        if unknown:
            raise DarklensError(f"unknown training option(s): {', '.join(sorted(unknown))}")
        given = {"epochs": epochs, "batch_size": batch_size, "lr": lr}
        overrides: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
        if out is None:
            self._temp = TempRunDir()
            run_dir = self._temp.path
        else:
            run_dir = Path(out)
            if (run_dir / "config.json").exists():
                raise DarklensError(f"{run_dir} already holds a finished run; choose another out")
        overrides.update(out_dir=str(run_dir), device=device, progress=progress, resume=False)
        det_opts = dict(self.options)
        if getattr(detector_class(self.name), "uses_instrument", False):
            det_opts.update(_instrument_options(lens, size, seed, det_opts))
        extra = {"normal": normal, "seed": seed,
                 "data": {"source": "python", "n": len(lens), "fingerprint": fingerprint(lens),
                          "class_names": list(lens.class_names), "streamed": False},
                 "split": {"seed": seed, "val_fraction": val_fraction,
                           "test_fraction": test_fraction, "cal_fraction": cal_fraction,
                           "n_train": len(train_set), "n_cal": n_cal,
                           "n_val_normal": len(det_data.val),
                           "n_test": len(det_data.split.test)},
                 "normaliser": det_data.normaliser.to_dict(), "views": {"mode": "augment"},
                 "input": {"kind": "raw"}}
        run = train_run(self.name, det_opts, {**self.train_options, **train_options},
                        train_set, det_data.val, image_size=size, in_channels=channels,
                        seed=seed, overrides=overrides, extra=extra, cal_set=cal_set)
        self.module, self._result, self._split = run.detector, run.result, det_data.split
        self._normaliser, self._transform, self._run_dir = det_data.normaliser, None, run_dir
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
        module = self._trained()
        x = as_images(images)
        want = (module.config.get("in_channels", 1), module.config.get("image_size"))
        if want[1] is not None and x.shape[1:] != (want[0], want[1], want[1]):
            raise DataError(f"images are {tuple(x.shape[1:])}, the detector was trained on "
                            f"{(want[0], want[1], want[1])}")
        if self._transform is not None:
            x = self._transform(x, progress=False)
        scores = score_images(module, self._normaliser(x), batch_size, device)
        if self._transform is not None:
            scores[~self._transform.fitted] = np.nan
        return scores

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the trained run to a new directory ``path`` (the layout of ``darklens train
        --out``: config.json, weights.pt, normal_stats.json, losses.csv, checkpoint.pt).

        The copy is made beside ``path`` and renamed into place, so ``path`` never holds half
        a run; an existing non-empty ``path`` is refused.

        Returns:
            ``path``.
        """
        self._trained()
        assert self._run_dir is not None
        return copy_run(self._run_dir, Path(path))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Detector:
        """A trained detector from a run directory (``darklens train --out`` or :meth:`save`).

        Weights are read as tensors only (``weights_only=True``); a missing, corrupt or
        untrusted run is a one-line ``CheckpointError``.
        """
        config = read_run_config(path)
        module = load_run(path)
        det = cls(module.name, **{k: v for k, v in config["config"].items()
                                  if k not in ("image_size", "in_channels")})
        det.options = dict(config["config"])
        det.module, det._run_dir = module, Path(path)
        det._normaliser = Normaliser.from_dict(config.get("normaliser", {"mode": "none"}))
        det._transform = load_for_run(path, config)
        return det

    def _trained(self) -> DetectorModule:
        if self.module is None:
            raise DarklensError(f"detector {self.name} is not trained: call fit() first")
        return self.module


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


def _instrument_options(data: LensData, size: int, seed: int,
                        options: dict[str, Any]) -> dict[str, Any]:
    """For a detector that fits the smooth lens (residual-chi2): the data's instrument (its
    preset's for simulator data), the preset as the prior of the fit's initial guess, and the
    seed, as ``darklens train`` gives it (options already given win)."""
    out: dict[str, Any] = {"instrument": instrument_for_data(None, data, size).to_dict()}
    preset = data.attrs.get("preset")
    if isinstance(preset, dict):
        out["prior"] = preset
    out["seed"] = seed
    return {**out, **options}
