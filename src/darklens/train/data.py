"""Training data for detectors: the held-out split, normalisation, and an endless simulator stream.

The split (``anomaly_split`` from ``darklens.data.dataset``, from the run's seed): the normal
class is cut into train / validation / test fractions; anomalies are never trained on and are
shared between validation and test in the same proportion. Training uses the normal training
part; early stopping uses only the normal validation images; ``darklens evaluate`` on the same
data uses the test part. A fingerprint of the data (SHA-256 of images and labels) is stored
with the run, so that evaluation knows whether it sees the training data (use the test part)
or a separate test set (use every image).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import IterableDataset

from darklens.data.dataset import ImageDataset, Normaliser, Split, anomaly_split
from darklens.data.lensdata import CLASSES, LensData
from darklens.data.shards import ShardDataset
from darklens.errors import DataError


def fingerprint(data: LensData | ShardDataset) -> str:
    """SHA-256 of the images and labels: tells the training data apart from any other set.

    For a ``ShardDataset`` it is the one computed by its streaming pass: the same bytes hashed
    in the same order, so the same value as for the loaded data.
    """
    if isinstance(data, ShardDataset):
        if data.fingerprint is None:
            data._scan()
        return str(data.fingerprint)
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(data.images, dtype=np.float32).tobytes())
    h.update(np.ascontiguousarray(data.labels, dtype=np.int64).tobytes())
    return h.hexdigest()


@dataclass
class DetectionData:
    """What ``darklens train`` trains and validates on."""

    train: ImageDataset
    val: ImageDataset  # normal validation images only
    split: Split
    normaliser: Normaliser


def detection_split(data: LensData | ShardDataset, normal: str = "no_sub", seed: int = 0,
                    val_fraction: float = 0.1, test_fraction: float = 0.2) -> Split:
    """The run's split (see the module docstring); raises DataError without normal images."""
    if normal not in data.class_names:
        raise DataError(f"unknown normal class {normal!r} (classes: {', '.join(data.class_names)})")
    if not (data.labels == data.class_names.index(normal)).any():
        raise DataError(f"no images of the normal class {normal!r} to train on")
    train_fraction = 1.0 - val_fraction - test_fraction
    if not (0 < train_fraction <= 1 and val_fraction >= 0 and test_fraction >= 0):
        raise DataError("validation and test fractions must be >= 0 and sum to less than 1")
    return anomaly_split(data, normal, (train_fraction, val_fraction, test_fraction), seed)


def detection_data(data: LensData | ShardDataset, normal: str = "no_sub", seed: int = 0,
                   val_fraction: float = 0.1, test_fraction: float = 0.2,
                   normalisation: str = "minmax") -> DetectionData:
    """Datasets of normal training and validation images, normalised as the run will be.

    With a ``ShardDataset`` the images stay on disk (read through its bounded cache) and a
    ``standard`` normalisation is fitted from its streaming pass.
    """
    split = detection_split(data, normal, seed, val_fraction, test_fraction)
    normal_id = data.class_names.index(normal)
    val = split.val[data.labels[split.val] == normal_id]
    if isinstance(data, ShardDataset):
        normaliser = data.fit_normaliser(normalisation, split.train)
    else:
        normaliser = Normaliser.fit(normalisation, data.images[split.train]
                                    if normalisation == "standard" else None)
    return DetectionData(ImageDataset(data, split.train, normaliser),
                         ImageDataset(data, val, normaliser), split, normaliser)


class SimulatorStream(IterableDataset):
    """Endless normal images from the built-in simulator, nothing written to disk.

    Image ``i`` of epoch ``e`` on rank ``r`` is the simulator's image number
    ``(e * world_size + r) * images_per_epoch + i`` for ``seed`` (the simulator's draws are
    counter-based), so a resumed run sees the same images, ranks see disjoint ones, and an
    epoch never repeats an earlier one. ``images_per_epoch`` should be at least
    ``steps_per_epoch * batch_size``. Use a ``seed`` different from any validation/test set.
    """

    def __init__(self, preset: str, seed: int, images_per_epoch: int, normal: str = "no_sub",
                 normaliser: Normaliser | None = None, chunk: int = 64):
        from darklens.simulate.presets import get_preset  # the simulator is optional here

        self.preset = get_preset(preset)
        self.seed, self.images_per_epoch, self.normal = seed, images_per_epoch, normal
        self.normaliser = normaliser or Normaliser("minmax")
        self.chunk = chunk
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int]]:
        from darklens.simulate.simulator import simulate_batch
        from darklens.train import distributed as dd

        start = (self.epoch * dd.world_size() + dd.rank()) * self.images_per_epoch
        label = CLASSES.index(self.normal)
        i = start
        while True:
            idx = np.arange(i, i + self.chunk)
            images, _ = simulate_batch(self.preset, self.normal, idx, self.seed,
                                       substructure_chi2=False)
            for img in self.normaliser(images.numpy()):
                yield torch.from_numpy(img), label
            i += self.chunk
