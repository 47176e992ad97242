"""Toy data and arguments shared by the benchmark and report tests."""

from __future__ import annotations

import numpy as np

from darklens.data.lensdata import LensData


def toy_rings(n_per_class: int, size: int = 32, seed: int = 0) -> LensData:
    """Noisy rings; cdm/vortex images carry one/two blobs whose brightness is their chi2."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    r = np.hypot(x, y)
    images, labels, chi2 = [], [], []
    for label in range(3):
        for _ in range(n_per_class):
            img = np.exp(-0.5 * ((r - size / 4 - rng.normal(0, 0.3)) / 1.5) ** 2)
            amp = 0.0
            for _ in range(label):
                amp = rng.uniform(0.2, 2.0)
                a = rng.uniform(0, 2 * np.pi)
                cx, cy = size / 4 * np.cos(a), size / 4 * np.sin(a)
                img = img + amp * np.exp(-0.5 * ((x - cx) ** 2 + (y - cy) ** 2) / 1.5**2)
            images.append(img + 0.05 * rng.standard_normal((size, size)))
            labels.append(label)
            chi2.append(np.nan if label == 0 else 100 * amp**2)
    return LensData(images=np.array(images, np.float32)[:, None],
                    labels=np.array(labels, np.int64),
                    metadata={"substructure_chi2": np.array(chi2)})


BENCH_ARGS = ["--detectors", "knn,deep-svdd", "--seeds", "2", "--epochs", "1",
              "--no-progress"]
