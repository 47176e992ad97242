"""The in-memory form of a labelled set of lensing images, whatever format it came from."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from darklens.errors import DarklensError

CLASSES: tuple[str, ...] = ("no_sub", "cdm", "vortex")


def check_classes(classes: Iterable[str]) -> None:
    """A one-line ``DarklensError`` naming the first of ``classes`` that is not one of the
    simulator's ``CLASSES`` (``darklens simulate --classes``, ``darklens.simulate``)."""
    bad = [c for c in classes if c not in CLASSES]
    if bad:
        raise DarklensError(f"unknown class {bad[0]!r}; known: {', '.join(CLASSES)}")


@dataclass
class LensData:
    """Images with their class labels and per-image metadata.

    images: float32 array (N, 1, H, W). labels: int64 array (N,) indexing ``class_names``.
    metadata: column name -> array with leading dimension N (scalars, or padded 2-D arrays
    such as per-subhalo masses). attrs: provenance (preset config, seed, package version).
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...] = CLASSES
    metadata: dict[str, np.ndarray] = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def select(self, mask_or_index: np.ndarray) -> LensData:
        """A subset (boolean mask or integer index), metadata and attrs carried along."""
        return LensData(
            images=self.images[mask_or_index],
            labels=self.labels[mask_or_index],
            class_names=self.class_names,
            metadata={k: v[mask_or_index] for k, v in self.metadata.items()},
            attrs=dict(self.attrs),
        )

    def of_class(self, name: str) -> LensData:
        """Only the images of one class."""
        return self.select(self.labels == self.class_names.index(name))
