"""Score many images with a detector in batches (eval mode, no gradients), and a saved run's
images as its training saw them (``RunScorer``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from darklens.data.dataset import Normaliser
from darklens.device import resolve_device
from darklens.fit.residual_input import ResidualInput, load_for_run
from darklens.models.base import Detector
from darklens.models.persistence import load_run, read_run_config


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


@dataclass
class RunScorer:
    """A trained detector and what its run does to images before it scores them: the input
    transform of a run trained on residual maps (``--input residual``), then the normaliser.

    The one way from raw images to a run's scores, for ``darklens score``, ``darklens
    evaluate`` and ``darklens.Detector.score``. ``config``: the run's config.json (empty for a
    detector that was trained in this process and not loaded).
    """

    detector: Detector
    normaliser: Normaliser
    transform: ResidualInput | None = None
    config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, run_dir: str | os.PathLike[str]) -> RunScorer:
        """The run in ``run_dir`` (weights read as tensors only; a bad run is a one-line
        ``CheckpointError``)."""
        config = read_run_config(run_dir)
        return cls(load_run(run_dir),
                   Normaliser.from_dict(config.get("normaliser", {"mode": "none"})),
                   load_for_run(run_dir, config), config)

    @property
    def image_shape(self) -> tuple[int, int, int] | None:
        """(C, H, W) of the images the detector was trained on (None if it does not say)."""
        size = self.detector.config.get("image_size")
        if size is None:
            return None
        return int(self.detector.config.get("in_channels", 1)), int(size), int(size)

    def inputs(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The images as the detector takes them (transformed, normalised), and which of
        them the transform could fit (None: no transform, all)."""
        fitted = None
        if self.transform is not None:
            images = self.transform(images, progress=False)
            fitted = np.asarray(self.transform.fitted, dtype=bool).copy()
        return self.normaliser(images), fitted

    def score_inputs(self, x: np.ndarray, fitted: np.ndarray | None, batch_size: int = 256,
                     device: str = "cpu") -> np.ndarray:
        """Scores (N,) float64 of what ``inputs`` returned; NaN where the transform failed."""
        scores = score_images(self.detector, x, batch_size, device)
        if fitted is not None:
            scores[~fitted] = np.nan
        return scores

    def score(self, images: np.ndarray, batch_size: int = 256,
              device: str = "cpu") -> np.ndarray:
        """Scores (N,) float64 of raw images (N, C, H, W); NaN for an image the transform
        (residual input) could not fit."""
        return self.score_inputs(*self.inputs(images), batch_size, device)
