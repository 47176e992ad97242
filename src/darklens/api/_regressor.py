"""``Regressor``: dark-matter properties (axion mass, subhalo abundance) with uncertainties."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from darklens.api._arrays import ImagesLike, as_images
from darklens.api._rundir import RunDirHolder
from darklens.data.lensdata import LensData
from darklens.errors import DarklensError
from darklens.models.regression_persistence import (
    RegressionRun,
    load_regression_run,
    predict_images,
)
from darklens.train.regression import RegressionConfig, train_regression


class Regressor(RunDirHolder):
    """A regressor of metadata columns with a Gaussian uncertainty per image, as ``darklens
    regress``: ``fit`` on a labelled LensData, ``predict`` the mean and sigma of any images.

    Args:
        targets: metadata column(s), e.g. ``"log10_axion_mass"`` (from vortex images),
            ``"f_sub"`` or ``"n_subhalos"`` (from CDM images).
        **config: ``RegressionConfig`` fields: ``arch`` (``small``, ``resnet18``,
            ``resnet34``), ``epochs``, ``batch_size``, ``lr``, ``ensemble``, ``seed``,
            ``val_fraction``, ``test_fraction``, ``max_minutes``, ...; an unknown key is a
            one-line ``DarklensError``.

    Attributes:
        config: the run's settings.
        info: after ``fit`` or ``load``, the run description (regression.json): split sizes,
            target standardisation, training prior, members' training.

    Examples:
        >>> import darklens as dl
        >>> d = dl.simulate("demo", 40, seed=0, classes=["vortex"], n_pix=32)
        >>> r = dl.Regressor("log10_axion_mass", epochs=1).fit(d)  # doctest: +SKIP
        >>> mean, sigma = r.predict(d.images[:4])  # doctest: +SKIP
        >>> mean.shape  # doctest: +SKIP
        (4, 1)
    """

    def __init__(self, targets: str | Sequence[str], **config: Any) -> None:
        names = [targets] if isinstance(targets, str) else list(targets)
        if not names:
            raise DarklensError("Regressor needs at least one target")
        self.config = RegressionConfig.from_dict({"targets": names, **config})
        self.info: dict[str, Any] | None = None
        self._run: RegressionRun | None = None

    def __repr__(self) -> str:
        return f"Regressor({self.targets}, {self._state()})"

    def _what(self) -> str:
        return "regressor"

    @property
    def targets(self) -> list[str]:
        """The target columns, in the order of ``predict``'s columns."""
        return list(self.config.targets)

    def fit(self, data: LensData, *, out: str | os.PathLike[str] | None = None,
            verbose: bool = False) -> Regressor:
        """Train on the images of ``data`` that carry the targets (``darklens regress train``).

        The images are split from ``config.seed`` into training, validation and held-out
        test parts (``info["data"]``; the test indices in ``split.json`` of the run).

        Args:
            data: a labelled LensData (e.g. from :func:`simulate`).
            out: a run directory to train in; default a private temporary one.
            verbose: print the split and a line per epoch.

        Returns:
            The regressor itself, trained.
        """
        if not isinstance(data, LensData):
            raise DarklensError("Regressor.fit needs a LensData (images with their metadata)")
        run_dir = self._use_run_dir(out)
        self.info = train_regression(data, self.config, run_dir, data_source="python",
                                     log=print if verbose else _quiet)
        self._run, self._run_dir = load_regression_run(run_dir), run_dir
        return self

    def predict(self, images: ImagesLike | LensData, *, tta: bool = True,
                batch_size: int = 256, device: str = "cpu"
                ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Mean and sigma of every target for every image, in physical units.

        Args:
            images: a LensData or one-channel images of the size trained on.
            tta: average over the 8 rotations and flips (test-time augmentation).
            batch_size: images predicted at a time.
            device: ``cpu``, ``cuda`` or ``auto``.

        Returns:
            (mean, sigma), each float64 (N, number of targets).
        """
        if self._run is None:
            raise DarklensError("regressor is not trained: call fit() first")
        mean, sigma = predict_images(self._run, as_images(images), tta=tta,
                                     batch_size=batch_size, device=device)
        return np.asarray(mean, dtype=np.float64), np.asarray(sigma, dtype=np.float64)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the trained run to a new directory ``path`` (``darklens regress train --out``
        layout), copied beside it and renamed into place.

        Returns:
            ``path``.
        """
        return self._save_run(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Regressor:
        """A trained regressor from a run directory (``darklens regress train`` or ``save``);
        weights are read as tensors only."""
        run = load_regression_run(path)
        reg = cls(list(run.targets), **{k: v for k, v in run.info["config"].items()
                                        if k != "targets" and k in _CONFIG_KEYS})
        reg.info, reg._run, reg._run_dir = run.info, run, Path(path)
        return reg


_CONFIG_KEYS = set(RegressionConfig.__dataclass_fields__)


def _quiet(message: str) -> None:
    """Discard a log line."""
