"""Training data for detectors: the held-out split, normalisation, and an endless simulator stream.

The split (``anomaly_split`` from ``darklens.data.dataset``, from the run's seed): the normal
class is cut into train / validation / test fractions; anomalies are never trained on and are
shared between validation and test in the same proportion. Training uses the normal training
part; early stopping uses only the normal validation images; ``darklens evaluate`` on the same
data uses the test part. The data's fingerprint (``darklens.data.fingerprint``) is stored with
the run, so that evaluation knows whether it sees the training data (use the test part) or a
separate test set (use every image).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import IterableDataset, TensorDataset

from darklens.data.dataset import ImageDataset, Normaliser, Split, anomaly_split
from darklens.data.lensdata import CLASSES, LensData
from darklens.data.shards import ShardDataset
from darklens.errors import DataError

if TYPE_CHECKING:
    from darklens.simulate.presets import Preset


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
    epoch never repeats an earlier one; DataLoader workers take alternate chunks of ``chunk``
    images (with ``batch_size == chunk`` the loader yields the single-process order).
    ``images_per_epoch`` should be at least
    ``steps_per_epoch * batch_size``. Use a ``seed`` different from any validation/test set.

    With ``n_views = V > 1`` every item is that lens rendered V times by the simulator
    (``darklens.simulate.views.render_views``: same lens, independent noise draws, and with
    ``new_source`` a new source in views 1..V-1), each view normalised on its own and stacked
    along the channel axis: a (V, H, W) tensor, the layout the infotheoretic detector takes as
    simulator-native views. View 0 is the image the ``n_views = 1`` stream yields.
    """

    def __init__(self, preset: str | Preset, seed: int, images_per_epoch: int,
                 normal: str = "no_sub", normaliser: Normaliser | None = None, chunk: int = 64,
                 n_views: int = 1, new_source: bool = False):
        from darklens.simulate.presets import get_preset  # the simulator is optional here

        if n_views < 1:
            raise ValueError(f"n_views must be at least 1, got {n_views}")
        self.preset = get_preset(preset) if isinstance(preset, str) else preset
        self.seed, self.images_per_epoch, self.normal = seed, images_per_epoch, normal
        self.normaliser = normaliser or Normaliser("minmax")
        self.chunk = chunk
        self.n_views, self.new_source = n_views, new_source
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int]]:
        from darklens.simulate.simulator import simulate_batch
        from darklens.train import distributed as dd

        start = (self.epoch * dd.world_size() + dd.rank()) * self.images_per_epoch
        label = CLASSES.index(self.normal)
        # DataLoader workers take every n-th chunk, so they never repeat each other's images
        worker = torch.utils.data.get_worker_info()
        wid, n_workers = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        i = start + wid * self.chunk
        while True:
            idx = np.arange(i, i + self.chunk)
            if self.n_views == 1:
                images, _ = simulate_batch(self.preset, self.normal, idx, self.seed,
                                           substructure_chi2=False)
            else:
                from darklens.simulate.views import render_views

                images = render_views(self.preset, self.normal, idx, self.seed, self.n_views,
                                      new_source=self.new_source)  # (B, V, H, W)
            for img in self.normaliser(images.numpy()):
                yield torch.from_numpy(img), label
            i += self.chunk * n_workers


def simulator_views(preset: str | Preset, n: int, seed: int, n_views: int, normal: str = "no_sub",
                    normaliser: Normaliser | None = None, new_source: bool = False
                    ) -> TensorDataset:
    """Simulated images ``0..n-1`` of the normal class as native views, (V, H, W) per item.

    The validation counterpart of ``SimulatorStream(n_views=V)``: view 0 of item ``i`` is image
    ``i`` of ``simulate_dataset(preset, n, seed)``, so the same images serve for scoring.
    """
    from darklens.simulate.views import render_views

    views = render_views(preset, normal, np.arange(n), seed, n_views, new_source=new_source)
    return TensorDataset(torch.from_numpy((normaliser or Normaliser("minmax"))(views.numpy())))
