"""The learned representation of a detector, and a 2-D map of it (PCA, or UMAP if installed).

A detector's features are what its declared ``embed`` hook gives (``Detector.representation``
names their source: an encoder, a feature network, an RBM's hidden-unit probabilities, ...); a
detector whose ``representation`` is None has no representation to show.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from darklens.models.base import Detector


def representation_fn(detector: Detector) -> tuple[Callable[[Tensor], Tensor], str] | None:
    """(function images -> (B, D) features, where the features come from), or None."""
    if detector.representation is None:
        return None
    return detector.embed, detector.representation


@torch.no_grad()
def embed(detector: Detector, images: np.ndarray,
          batch_size: int = 256) -> tuple[np.ndarray, str] | None:
    """Features (N, D) float64 of ``images`` (N, C, H, W), eval mode, or None (see module doc)."""
    found = representation_fn(detector)
    if found is None:
        return None
    fn, where = found
    detector.eval()
    x = torch.as_tensor(images, dtype=torch.float32)
    feats = [fn(chunk).flatten(1).double() for chunk in x.split(batch_size)]
    return torch.cat(feats).numpy(), where


def map_2d(features: np.ndarray, seed: int = 0) -> tuple[np.ndarray, str]:
    """Project features to 2-D: UMAP if the ``umap`` package is importable, else PCA."""
    x = np.asarray(features, dtype=np.float64)
    x = x[:, np.isfinite(x).all(axis=0)] if x.size else x
    x = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0)
    try:
        import umap  # optional

        return umap.UMAP(n_components=2, random_state=seed).fit_transform(x), "UMAP"
    except ImportError:
        pass
    from sklearn.decomposition import PCA

    n = min(2, x.shape[0], x.shape[1])
    pts = PCA(n_components=n, random_state=seed).fit_transform(x)
    if pts.shape[1] < 2:
        pts = np.c_[pts, np.zeros((pts.shape[0], 2 - pts.shape[1]))]
    return pts, "PCA"
