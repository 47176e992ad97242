"""Small synthetic lens data sets for the data-layer tests (no simulator needed)."""

from __future__ import annotations

import numpy as np
import pytest

from darklens.data.lensdata import CLASSES, LensData


def synthetic_lens_data(n_per_class: int = 3, size: int = 16, seed: int = 0) -> LensData:
    """Gaussian rings plus noise; cdm/vortex images get a bright blob. Metadata of both kinds."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    r = np.hypot(x, y)
    images, labels = [], []
    for label in range(len(CLASSES)):
        for _ in range(n_per_class):
            ring = np.exp(-0.5 * ((r - size / 4) / 1.5) ** 2)
            if label > 0:
                cx, cy = rng.uniform(-size / 4, size / 4, 2)
                ring += 0.8 * np.exp(-0.5 * ((x - cx) ** 2 + (y - cy) ** 2))
            images.append(ring + 0.05 * rng.standard_normal((size, size)))
            labels.append(label)
    n = len(labels)
    n_sub = rng.integers(0, 4, n)
    masses = np.full((n, 3), np.nan)
    for i, k in enumerate(n_sub):
        masses[i, :k] = 10 ** rng.uniform(6, 10, k)
    return LensData(
        images=np.asarray(images, dtype=np.float32)[:, None],
        labels=np.asarray(labels, dtype=np.int64),
        class_names=CLASSES,
        metadata={
            "theta_e": rng.uniform(0.8, 1.5, n),
            "n_subhalos": n_sub.astype(np.int64),
            "subhalo_mass": masses,
        },
        attrs={"preset": "test", "seed": seed, "config": {"size": size, "noise": 0.05}},
    )


@pytest.fixture
def lens_data() -> LensData:
    return synthetic_lens_data()


@pytest.fixture
def make_lens_data():
    """The synthetic data factory itself, for tests that need other sizes or seeds."""
    return synthetic_lens_data
