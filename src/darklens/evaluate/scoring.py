"""Score many images with a detector in batches (eval mode, no gradients)."""

from __future__ import annotations

import numpy as np
import torch

from darklens.device import resolve_device
from darklens.models.base import Detector


@torch.no_grad()
def score_images(detector: Detector, images: np.ndarray | torch.Tensor, batch_size: int = 256,
                 device: str | torch.device = "cpu") -> np.ndarray:
    """Anomaly scores (N,) float64 for images (N, C, H, W); checks the result's shape."""
    device = resolve_device(device)
    detector.eval().to(device)
    x = torch.as_tensor(images, dtype=torch.float32)
    out = [detector.score(chunk.to(device)).double().cpu() for chunk in x.split(batch_size)]
    scores = torch.cat(out).numpy() if out else np.zeros(0)
    if scores.shape != (x.shape[0],):
        raise RuntimeError(f"{detector.name}.score returned shape {scores.shape}, "
                           f"expected ({x.shape[0]},)")
    return scores
