"""Tiny synthetic lens-like images for detector tests: elliptical Gaussian rings plus noise.

An "anomaly" is a normal image with a bright compact blob (three times the ring's peak) added
inside the ring: easy to detect, so any working detector must separate it (AUROC above 0.9).
"""

from __future__ import annotations

import numpy as np

from darklens.data.lensdata import LensData


def rings(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """(n, 1, size, size) float32 images in [0, 1]: rings of random radius, centre, axis ratio."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    yy = (yy - size / 2) / size
    xx = (xx - size / 2) / size
    out = np.empty((n, 1, size, size), np.float32)
    for i in range(n):
        cx, cy = rng.normal(0, 0.01, 2)
        q = rng.uniform(0.9, 1.0)
        phi = rng.uniform(0, np.pi)
        c, s = np.cos(phi), np.sin(phi)
        x, y = (xx - cx) * c + (yy - cy) * s, -(xx - cx) * s + (yy - cy) * c
        r = np.sqrt(q * x**2 + y**2 / q)
        radius = rng.uniform(0.25, 0.27)
        img = np.exp(-0.5 * ((r - radius) / 0.04) ** 2) + rng.normal(0, 0.03, (size, size))
        out[i, 0] = img
    lo = out.min(axis=(2, 3), keepdims=True)
    hi = out.max(axis=(2, 3), keepdims=True)
    return (out - lo) / (hi - lo)


def add_blobs(images: np.ndarray, seed: int = 1, amplitude: float = 3.0) -> np.ndarray:
    """Copies of ``images`` with one bright Gaussian blob each (width 1.5 px) inside the ring."""
    rng = np.random.default_rng(seed)
    n, _, size, _ = images.shape
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    out = images.copy()
    for i in range(n):
        ang = rng.uniform(0, 2 * np.pi)
        rad = rng.uniform(0.1, 0.2) * size
        bx, by = size / 2 + rad * np.cos(ang), size / 2 + rad * np.sin(ang)
        out[i, 0] += amplitude * np.exp(-((xx - bx) ** 2 + (yy - by) ** 2) / (2 * 1.5**2))
    return np.clip(out, 0, None).astype(np.float32)


def toy_lensdata(n_per_class: int, size: int = 32, seed: int = 0) -> LensData:
    """no_sub = rings; cdm = rings with one blob; vortex = rings with two fainter blobs."""
    normal = rings(3 * n_per_class, size, seed)
    cdm = add_blobs(normal[n_per_class : 2 * n_per_class], seed + 1)
    vortex = add_blobs(add_blobs(normal[2 * n_per_class :], seed + 2, 2.0), seed + 3, 2.0)
    images = np.concatenate([normal[:n_per_class], cdm, vortex])
    labels = np.repeat(np.arange(3), n_per_class).astype(np.int64)
    return LensData(images=images, labels=labels)
