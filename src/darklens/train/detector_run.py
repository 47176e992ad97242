"""A detector run from data: its sets, its instrument, its record, then ``train_run``.

What ``darklens train`` (``commands/train.py``) and ``darklens.Detector.fit``
(``api/_detector.py``) both do, written once:

1. ``split_sets``: the run's split of a data set (``train/data.py: detection_data``), with
   ``cal_fraction`` of the normal images taken out of the training part as calibration
   normals (``train/run.py: calibration_split``) and the split's record for config.json;
   the simulator stream of ``darklens train --preset`` builds a ``DetectorSets`` itself;
2. ``instrument_options``: for a detector that fits the smooth lens (residual-chi2), the
   instrument, the preset as the prior of its initial guess, and the seed;
3. ``data_record``: where the images came from, with their fingerprint (``darklens evaluate``
   recognises the training data by it);
4. ``train_detector``: the overrides of the caller's epochs, batch size, learning rate and
   run settings, the config.json record, physical pseudo-anomalies for a detector with a
   label-free choice (``physical_pseudo``), and ``train_run``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch.utils.data import Dataset

from darklens.data.dataset import Normaliser, Split
from darklens.data.fingerprint import fingerprint
from darklens.data.lensdata import LensData
from darklens.data.shards import ShardDataset
from darklens.errors import DarklensError
from darklens.fit.instrument import instrument_for_data
from darklens.models.base import Detector, detector_class
from darklens.train.data import detection_data
from darklens.train.run import TrainedRun, calibration_split, train_run


@dataclass
class DetectorSets:
    """What a detector run trains, validates and calibrates on.

    ``split`` and ``record`` (config.json's ``split``) come from a data set's split and are
    None for the simulator stream; ``fit_val`` replaces ``val`` for the loop's validation
    loss only (native views); ``n_normal``: the normal images of the data set (0: a stream).
    """

    train: Dataset
    val: Dataset
    cal: Dataset | None
    normaliser: Normaliser
    image_size: int
    in_channels: int
    split: Split | None = None
    record: dict[str, Any] | None = None
    fit_val: Dataset | None = None
    n_normal: int = 0


def split_sets(data: LensData | ShardDataset, normal: str, seed: int, val_fraction: float,
               test_fraction: float, cal_fraction: float, normalise: str,
               cal_name: str = "cal_fraction") -> DetectorSets:
    """The run's split of ``data`` (from ``seed``): training, validation and test normals,
    ``cal_fraction`` of the normals out of the training part as calibration normals.

    ``cal_fraction`` must lie in [0, 1) (``cal_name`` names it in the error); when it rounds
    to no image, ``cal`` is None and the caller says so (``n_normal`` is given for that)."""
    det = detection_data(data, normal, seed, val_fraction, test_fraction, normalise)
    n_normal = int((data.labels == data.class_names.index(normal)).sum())
    if not 0 <= cal_fraction < 1:
        raise DarklensError(f"{cal_name} must be in [0, 1), got {cal_fraction}")
    n_cal = int(round(cal_fraction * n_normal))
    train_set, cal_set = det.train, None
    if n_cal:
        train_set, cal_set = calibration_split(det.train, n_cal, seed)
    record = {"seed": seed, "val_fraction": val_fraction, "test_fraction": test_fraction,
              "cal_fraction": cal_fraction, "n_train": len(train_set), "n_cal": n_cal,
              "n_val_normal": len(det.val), "n_test": len(det.split.test)}
    shape = data.images.shape
    return DetectorSets(train_set, det.val, cal_set, det.normaliser, int(shape[-1]),
                        int(shape[1]), det.split, record, n_normal=n_normal)


def data_record(data: LensData | ShardDataset, **where: Any) -> dict[str, Any]:
    """config.json's ``data``: ``where`` (``path=...`` or ``source=...``), the number of
    images, their fingerprint, class names and whether they were streamed from shards."""
    return {**where, "n": len(data), "fingerprint": fingerprint(data),
            "class_names": list(data.class_names), "streamed": isinstance(data, ShardDataset)}


def instrument_options(name: str, options: dict[str, Any], spec: str | None, data: Any,
                       size: int, seed: int) -> dict[str, Any] | None:
    """For a detector that fits the smooth lens (``uses_instrument``, e.g. residual-chi2), put
    its instrument, prior and seed into ``options`` and return the instrument (as a dict);
    None for any other detector (``options`` unchanged).

    The instrument is ``spec`` (``--instrument``) if given, else the one ``options`` holds,
    else the data's (its preset's for simulator data, else the default;
    ``instrument_for_data``). The prior of the fit's initial guess is the data's preset, and
    the seed the run's, unless ``options`` holds them.
    """
    if not getattr(detector_class(name), "uses_instrument", False):
        return None
    if spec or "instrument" not in options:
        options["instrument"] = instrument_for_data(spec, data, size).to_dict()
    preset = getattr(data, "attrs", {}).get("preset")
    if isinstance(preset, dict):  # simulator data: its own prior trains the fit's guess
        options.setdefault("prior", preset)
    options.setdefault("seed", seed)
    return dict(options["instrument"])


def physical_pseudo(detector: Detector, source: Any, split: Split | None,
                    normaliser: Normaliser, normal: str, seed: int) -> dict[str, Any] | None:
    """Give a detector with a label-free choice (``accepts_pseudo_anomalies``) physical
    pseudo-anomalies: its validation normals (of ``split``) re-rendered with random point masses
    (``darklens.simulate.pseudo``), normalised like its training images. Only for data that say
    how darklens simulated them (a ``LensData`` or shards with their preset, seed and image
    indices); otherwise the detector keeps its own proxy and this returns None, else
    config.json's record of them."""
    if not detector.accepts_pseudo_anomalies or split is None \
            or not isinstance(source, (LensData, ShardDataset)):
        return None
    from darklens.simulate.pseudo import pseudo_for_data

    rows = split.val[source.labels[split.val] == list(source.class_names).index(normal)]
    if isinstance(source, ShardDataset):  # its metadata stay on disk: read the one column
        index = source.metadata_column("index")
        if index is None:
            return None
        # what pseudo_for_data reads of a data set
        source = SimpleNamespace(attrs=dict(source.attrs), metadata={"index": index})
    pseudo = pseudo_for_data(source, rows, pseudo_seed=seed)
    if pseudo is None:
        return None
    detector.set_pseudo_anomalies(torch.as_tensor(normaliser(pseudo.numpy())))
    return {"kind": "physical", "n": int(pseudo.shape[0]), "pseudo_seed": int(seed)}


def train_detector(name: str, detector_options: dict[str, Any],
                   train_options: dict[str, Any], sets: DetectorSets, *, out_dir: str | Path,
                   seed: int, normal: str, data: dict[str, Any], extra: dict[str, Any],
                   epochs: int | None = None, batch_size: int | None = None,
                   lr: float | None = None, device: str = "cpu", progress: bool = False,
                   resume: bool = False,
                   prepare: Callable[[Detector, dict[str, Any]], None] | None = None,
                   source: Any = None) -> TrainedRun:
    """Train ``name`` on ``sets`` into the run directory ``out_dir`` (``train_run``).

    ``epochs``, ``batch_size`` and ``lr`` override the detector's defaults and
    ``train_options`` where given. config.json records ``extra`` completed in place with the
    normal class, the seed, ``data`` (see ``data_record``), the split and the normaliser;
    ``prepare`` (see ``train_run``) runs before training and may still add to ``extra``.
    ``source``: the data set ``sets`` were split from, for ``physical_pseudo``.
    """
    given = {"epochs": epochs, "batch_size": batch_size, "lr": lr}
    overrides: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    overrides.update(out_dir=str(out_dir), resume=resume, device=device, progress=progress)
    extra.update(normal=normal, seed=seed, data=data, normaliser=sets.normaliser.to_dict())
    if sets.record is not None:
        extra["split"] = sets.record

    def prepare_all(detector: Detector, values: dict[str, Any]) -> None:
        pseudo = physical_pseudo(detector, source, sets.split, sets.normaliser, normal, seed)
        if pseudo is not None:
            extra["pseudo_anomalies"] = pseudo
        if prepare is not None:
            prepare(detector, values)

    return train_run(name, detector_options, train_options, sets.train, sets.val,
                     image_size=sets.image_size, in_channels=sets.in_channels, seed=seed,
                     overrides=overrides, prepare=prepare_all, fit_val=sets.fit_val, extra=extra,
                     cal_set=sets.cal)
