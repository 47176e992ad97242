"""Score many images with a detector in batches (eval mode, no gradients)."""

from __future__ import annotations

import numpy as np
import torch

from darklens.device import resolve_device
from darklens.models.base import Detector


@torch.no_grad()
def score_all_images(detector: Detector, images: np.ndarray | torch.Tensor,
                     batch_size: int = 256,
                     device: str | torch.device = "cpu") -> dict[str, np.ndarray] | None:
    """Every score of a detector that has several (``score_all``, e.g. the infotheoretic
    detector's R(z), kNN and critic scores), each (N,) float64; None for other detectors."""
    if not callable(getattr(detector, "score_all", None)):
        return None
    device = resolve_device(device)
    detector.eval().to(device)
    x = torch.as_tensor(images, dtype=torch.float32)
    parts = [detector.score_all(chunk.to(device)) for chunk in x.split(batch_size)]
    if not parts:
        return {}
    return {k: torch.cat([p[k] for p in parts]).double().cpu().numpy() for k in parts[0]}


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
