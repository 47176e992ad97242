"""The physics baseline: fit the smooth lens to every image and score what is left over.

Nothing is learned. ``score`` fits the smooth model (:mod:`darklens.fit`) and reduces the
normalised residual map ``(data - model) / sigma`` to one number per image:

- ``"chi2"``: the reduced chi-square of the whole image;
- ``"local"``: the largest mean of ``residual^2`` over ``window`` x ``window`` windows (a
  matched filter for a compact perturbation: background pixels no longer dilute it);
- ``"combined"`` (default): the sum of both, each as a robust z-score against the training
  normals (median and MAD, measured in ``fit_start`` on up to ``calibration_images`` of them).

An image the fitter could not fit (NaN pixels, a fit that did not reach ``max_chi2_red``) gets
a NaN score; ``darklens evaluate`` and ``darklens score`` name such images and never rank
them silently.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from darklens.fit.fitter import FitOptions, SmoothFit, fit_smooth_lens
from darklens.fit.instrument import Instrument
from darklens.models.base import Detector, register_detector

STATISTICS = ("chi2", "local", "combined")


def residual_statistics(residual: np.ndarray | Tensor, chi2_red: np.ndarray,
                        window: int = 8) -> dict[str, np.ndarray]:
    """Per-image statistics of normalised residual maps (N, H, W)."""
    r2 = torch.as_tensor(np.asarray(residual), dtype=torch.float32).square().unsqueeze(1)
    local = F.avg_pool2d(r2, window, stride=max(1, window // 2)).amax((1, 2, 3))
    return {"chi2": np.asarray(chi2_red, dtype=np.float64), "local": local.double().numpy()}


@register_detector
class ResidualChi2(Detector):
    """Smooth-lens fit, then a chi-square statistic of the residual (see the module docstring)."""

    name = "residual-chi2"

    def __init__(self, image_size: int = 64, in_channels: int = 1,
                 instrument: dict[str, Any] | None = None, statistic: str = "combined",
                 window: int = 8, calibration_images: int = 200,
                 fit_options: dict[str, Any] | None = None):
        if statistic not in STATISTICS:
            raise ValueError(f"statistic must be one of {STATISTICS}, not {statistic!r}")
        if in_channels != 1:
            raise ValueError("residual-chi2 fits one-channel images")
        inst = Instrument.from_dict(instrument) if instrument else Instrument(n_pix=image_size)
        if inst.n_pix != image_size:
            raise ValueError(f"instrument has {inst.n_pix} pixels, images {image_size}")
        super().__init__(image_size=image_size, in_channels=in_channels,
                         instrument=inst.to_dict(), statistic=statistic, window=window,
                         calibration_images=calibration_images, fit_options=fit_options or {})
        self.instrument = inst
        self.fit_options = FitOptions(**(fit_options or {}))
        # robust centre and scale of each statistic on training normals: (chi2, local)
        self.register_buffer("stat_median", torch.zeros(2, dtype=torch.float64))
        self.register_buffer("stat_scale", torch.ones(2, dtype=torch.float64))
        self.last_fit: SmoothFit | None = None

    def fit_residuals(self, images: Tensor | np.ndarray) -> SmoothFit:
        """The smooth-lens fit of images (B, 1, H, W)."""
        return fit_smooth_lens(images, self.instrument, self.fit_options)

    def fit_start(self, loader: Iterable) -> None:
        want = int(self.config["calibration_images"])
        parts, have = [], 0
        for batch in loader:
            images = batch[0] if isinstance(batch, (list, tuple)) else batch
            parts.append(images[: want - have])
            have += parts[-1].shape[0]
            if have >= want:
                break
        if not parts:
            raise ValueError("residual-chi2 needs normal images to calibrate its statistics")
        fit = self.fit_residuals(torch.cat(parts))
        stats = residual_statistics(fit.residual, fit.chi2_red, self.config["window"])
        ok = fit.converged
        if ok.sum() < 2:
            raise ValueError("residual-chi2: the smooth model fits fewer than two of the "
                             "training normals; check --instrument")
        for i, key in enumerate(("chi2", "local")):
            v = stats[key][ok]
            med = float(np.median(v))
            self.stat_median[i] = med
            self.stat_scale[i] = max(1.4826 * float(np.median(np.abs(v - med))), 1e-12)

    def optimizer_groups(self) -> dict:
        return {}  # nothing to train

    def training_loss(self, batch: Tensor) -> Tensor:
        raise RuntimeError("residual-chi2 has nothing to train")

    @torch.no_grad()
    def score(self, images: Tensor) -> Tensor:
        fit = self.fit_residuals(images.cpu())
        self.last_fit = fit
        stats = residual_statistics(fit.residual, fit.chi2_red, self.config["window"])
        statistic = self.config["statistic"]
        if statistic == "combined":
            med, scale = self.stat_median.numpy(), self.stat_scale.numpy()
            s = (stats["chi2"] - med[0]) / scale[0] + (stats["local"] - med[1]) / scale[1]
        else:
            s = stats[statistic]
        s = np.where(fit.converged, s, np.nan)
        return torch.as_tensor(s, dtype=torch.float64)
