"""The learned representation of a detector, and a 2-D map of it (PCA, or UMAP if installed).

``embed`` looks, in order, for: a detector's own ``embed(images)``; ``encode(images)`` (its
first output when it returns several, e.g. the infotheoretic backbone features or the CVAE's
mean); an ``encoder`` module (DCAE, AAE); a feature network ``net`` (Deep SVDD); kNN's
``raw_features``; an RBM's hidden-unit probabilities. A detector with none of them has no
representation to show (``None``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from darklens.models.base import Detector


def _rbm_hidden(det: Detector) -> Callable[[Tensor], Tensor]:
    return lambda x: torch.sigmoid(F.linear(det._visible(x), det.W, det.h_bias))


def representation_fn(detector: Detector) -> tuple[Callable[[Tensor], Tensor], str] | None:
    """(function images -> (B, D) features, where the features come from), or None."""
    if callable(getattr(detector, "embed", None)):
        return detector.embed, "embed()"
    if callable(getattr(detector, "encode", None)):
        def enc(x: Tensor) -> Tensor:
            out = detector.encode(x)
            return out[0] if isinstance(out, (tuple, list)) else out
        return enc, "encode() (first output)"
    if isinstance(getattr(detector, "encoder", None), torch.nn.Module):
        return detector.encoder, "encoder"
    if isinstance(getattr(detector, "net", None), torch.nn.Module):
        return detector.net, "feature network"
    if callable(getattr(detector, "raw_features", None)):
        return detector.raw_features, "frozen feature map"
    if all(hasattr(detector, a) for a in ("W", "h_bias", "_visible")):
        return _rbm_hidden(detector), "hidden-unit probabilities"
    return None


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
