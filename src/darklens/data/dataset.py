"""Torch datasets over ``LensData``: deterministic splits and image normalisation.

Normalisation modes:
- ``"minmax"``: each image scaled to [0, 1] by its own min and max (the DeepLense convention);
  needs no fitting, so it cannot leak information between splits.
- ``"standard"``: (x - mean) / std with one mean and std over all pixels of the *training* images
  only (``Normaliser.fit``), then applied unchanged to validation and test images.
- ``"none"``: images as stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from darklens.data.lensdata import LensData

NORMALISATIONS: tuple[str, ...] = ("minmax", "standard", "none")


@dataclass(frozen=True)
class Normaliser:
    """A fitted normalisation; ``to_dict``/``from_dict`` store it with a model checkpoint."""

    mode: str = "none"
    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in NORMALISATIONS:
            raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got {self.mode!r}")

    @classmethod
    def fit(cls, mode: str, train_images: np.ndarray | None = None) -> Normaliser:
        """Fit ``mode`` on training images (only ``"standard"`` needs them)."""
        if mode != "standard":
            return cls(mode)
        if train_images is None or np.size(train_images) == 0:
            raise ValueError("'standard' normalisation needs training images to fit on")
        x = np.asarray(train_images, dtype=np.float64)
        std = float(x.std())
        return cls(mode, float(x.mean()), std if std > 0 else 1.0)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Normalise a batch (..., H, W) or one image (H, W); returns a new float32 array."""
        x = np.array(images, dtype=np.float32)  # a copy: callers may change it in place
        if self.mode == "standard":
            return ((x - np.float32(self.mean)) / np.float32(self.std)).astype(np.float32)
        if self.mode == "minmax":
            lo = x.min(axis=(-2, -1), keepdims=True)
            span = x.max(axis=(-2, -1), keepdims=True) - lo
            return np.where(span > 0, (x - lo) / np.where(span > 0, span, 1), 0).astype(np.float32)
        return x

    def to_dict(self) -> dict:
        return {"mode": self.mode, "mean": self.mean, "std": self.std}

    @classmethod
    def from_dict(cls, d: dict) -> Normaliser:
        return cls(str(d["mode"]), float(d.get("mean", 0.0)), float(d.get("std", 1.0)))


class ImageDataset(Dataset):
    """Images of a ``LensData`` as torch tensors.

    Item ``i`` is ``(image, label)``: a float32 tensor (1, H, W) and an int; with ``targets``
    (metadata column names), ``(image, label, target)`` where ``target`` is a float32 tensor
    (len(targets),). ``indices`` restricts the dataset to a subset without copying the images.
    """

    def __init__(
        self,
        data: LensData,
        indices: Sequence[int] | np.ndarray | None = None,
        normaliser: Normaliser | None = None,
        targets: Sequence[str] = (),
    ) -> None:
        self.data = data
        self.indices = np.arange(len(data)) if indices is None else np.asarray(indices, dtype=int)
        self.normaliser = normaliser or Normaliser("none")
        self.targets = tuple(targets)
        for name in self.targets:
            column = data.metadata.get(name)
            if column is None or np.asarray(column).ndim != 1:
                raise KeyError(
                    f"no scalar metadata column '{name}' (have: {sorted(data.metadata)})"
                )

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        j = int(self.indices[i])
        image = torch.from_numpy(self.normaliser(self.data.images[j]))
        label = int(self.data.labels[j])
        if not self.targets:
            return image, label
        target = torch.tensor(
            [float(self.data.metadata[name][j]) for name in self.targets], dtype=torch.float32
        )
        return image, label, target


class Split(NamedTuple):
    """Index arrays (sorted) of the training, validation and test images."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def split_indices(
    labels: np.ndarray,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    stratify: bool = True,
) -> Split:
    """Split ``range(len(labels))`` into train/val/test, the same way for the same seed.

    With ``stratify`` each class is split separately in the given fractions (rounded; the test
    part takes the remainder), so every part keeps the class balance.
    """
    labels = np.asarray(labels)
    fractions = _check_fractions(fractions)
    rng = np.random.default_rng(seed)
    groups = (
        [np.flatnonzero(labels == c) for c in np.unique(labels)]
        if stratify
        else [np.arange(len(labels))]
    )
    parts: list[list[np.ndarray]] = [[], [], []]
    for group in groups:
        for k, chunk in enumerate(_cut(rng.permutation(group), fractions)):
            parts[k].append(chunk)
    return Split(
        *(
            np.sort(np.concatenate(p)).astype(np.int64) if p else np.zeros(0, np.int64)
            for p in parts
        )
    )


def anomaly_split(
    data: LensData,
    normal: str = "no_sub",
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> Split:
    """A split for anomaly detection: train on normal images only; validate and test on all.

    The ``normal`` class is split in ``fractions``; the anomalous classes, never trained on, are
    split between validation and test in proportion ``fractions[1] : fractions[2]``, so no image
    is wasted and the test part holds held-out normal images plus unseen anomalies.
    """
    fractions = _check_fractions(fractions)
    normal_label = data.class_names.index(normal)
    labels = np.asarray(data.labels)
    rng = np.random.default_rng(seed)
    train, val, test = _cut(rng.permutation(np.flatnonzero(labels == normal_label)), fractions)
    rest = fractions[1] + fractions[2]
    val_share = fractions[1] / rest if rest > 0 else 0.0
    vals, tests = [val], [test]
    for c in np.unique(labels[labels != normal_label]):
        idx = rng.permutation(np.flatnonzero(labels == c))
        _, v, t = _cut(idx, (0.0, val_share, 1.0 - val_share))
        vals.append(v)
        tests.append(t)
    return Split(
        np.sort(train).astype(np.int64),
        np.sort(np.concatenate(vals)).astype(np.int64),
        np.sort(np.concatenate(tests)).astype(np.int64),
    )


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1: {fractions}")
    return (float(fractions[0]), float(fractions[1]), float(fractions[2]))


def _cut(idx: np.ndarray, fractions: Sequence[float]) -> tuple[np.ndarray, ...]:
    n = len(idx)
    n_train = int(round(fractions[0] * n))
    n_val = min(n - n_train, int(round(fractions[1] * n)))
    return idx[:n_train], idx[n_train : n_train + n_val], idx[n_train + n_val :]
