"""Where-maps: a per-pixel map of what makes an image anomalous, for every detector.

A detector with a map of its own declares it (``Detector.where_map``): the reconstruction error
of the autoencoders (dcae, cvae, aae, rbm), the squared normalised residual of the smooth-lens
fit (residual-chi2). For the others (knn, deep-svdd, infotheoretic: scores of a whole image in
a feature space) ``occlusion_map`` measures how much the score drops when a ``patch`` x
``patch`` square (moved by ``stride`` pixels) is replaced by the same region of a Gaussian-
blurred copy of the image (``blur`` pixels): blurring removes the small-scale distortion that
substructure adds while keeping the arc's light, so a large drop marks a square that made the
image anomalous. A pixel's value is the mean drop over the squares covering it. This needs only
``score``, so it works for any detector (no detector's code is touched).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from darklens.device import resolve_device
from darklens.models.base import Detector

PATCH, STRIDE, BLUR = 8, 4, 2.0


def where_map_kind(detector: Detector, images: Tensor) -> str:
    """'own' if the detector declares its map (tried on ``images[:1]``), else 'occlusion'."""
    with torch.no_grad():
        return "own" if detector.where_map(images[:1]) is not None else "occlusion"


def gaussian_blur(images: Tensor, sigma: float) -> Tensor:
    """Each channel of (B, C, H, W) blurred by a Gaussian of ``sigma`` pixels (reflect edges)."""
    radius = max(1, int(round(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).view(1, 1, 1, -1)
    c = images.shape[1]
    x = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, k.expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


@torch.no_grad()
def occlusion_map(detector: Detector, images: Tensor, patch: int = PATCH, stride: int = STRIDE,
                  blur: float = BLUR, batch_size: int = 256) -> Tensor:
    """Occlusion saliency (B, H, W) of ``detector.score`` (see the module docstring)."""
    b, _, h, w = images.shape
    blurred = gaussian_blur(images, blur)
    rows = list(range(0, max(1, h - patch) + 1, stride))
    cols = list(range(0, max(1, w - patch) + 1, stride))
    if rows[-1] + patch < h:
        rows.append(h - patch)
    if cols[-1] + patch < w:
        cols.append(w - patch)
    squares = [(r, c) for r in rows for c in cols]
    base = detector.score(images).double()
    out = torch.zeros(b, h, w, dtype=torch.float64)
    cover = torch.zeros(h, w, dtype=torch.float64)
    for r, c in squares:
        cover[r:r + patch, c:c + patch] += 1
    for i in range(b):
        copies = images[i:i + 1].repeat(len(squares), 1, 1, 1)
        for k, (r, c) in enumerate(squares):
            copies[k, :, r:r + patch, c:c + patch] = blurred[i, :, r:r + patch, c:c + patch]
        drops = torch.cat([base[i] - detector.score(chunk).double()
                           for chunk in copies.split(batch_size)])
        for k, (r, c) in enumerate(squares):
            out[i, r:r + patch, c:c + patch] += drops[k]
    return (out / cover.clamp_min(1)).float()


@torch.no_grad()
def where_maps(detector: Detector, images: np.ndarray | Tensor, batch_size: int = 64,
               device: str | torch.device = "cpu") -> np.ndarray:
    """Where-maps (N, H, W) float32 of images (N, C, H, W), normalised as the detector's input:
    the detector's own map, or the occlusion saliency of its score."""
    device = resolve_device(device)
    detector.eval().to(device)
    x = torch.as_tensor(images, dtype=torch.float32)
    parts = []
    for chunk in x.split(batch_size):
        chunk = chunk.to(device)
        m = detector.where_map(chunk)
        if m is None:
            m = occlusion_map(detector, chunk)
        parts.append(m.float().cpu())
    if not parts:
        return np.zeros((0, *x.shape[2:]), np.float32)
    return torch.cat(parts).numpy()
