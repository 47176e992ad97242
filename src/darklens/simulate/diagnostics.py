"""How visible a preset's substructure is, in the units a detector sees.

A reconstruction-based detector that cannot reproduce substructure pays, per pixel, the squared
difference between the image with and without it, in the output normalisation (per-image
min-max for DeepLense). ``residual_power`` measures that excess next to the noise floor, so a
preset can be compared with published anomaly scores (the excess mean reconstruction error of
anomalies over normal images) without training anything.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from darklens.simulate.observation import noise_sigma, observe
from darklens.simulate.parameters import CLASS_IDS, draw_parameters
from darklens.simulate.presets import Preset
from darklens.simulate.render import render_noiseless


@dataclass(frozen=True)
class ResidualPower:
    """Per-image mean squared pixel values in output units (min-max or flux)."""

    substructure: np.ndarray  # mean over pixels of (with - without substructure)^2
    noise: np.ndarray  # mean over pixels of the noise variance

    def summary(self) -> dict[str, float]:
        """Mean and median of both, for tables and JSON."""
        return {
            "substructure_mean": float(self.substructure.mean()),
            "substructure_median": float(np.median(self.substructure)),
            "noise_mean": float(self.noise.mean()),
        }


def residual_power(
    preset: Preset, class_name: str, n_images: int, seed: int = 0, batch: int = 64
) -> ResidualPower:
    """Substructure residual and noise power of ``n_images`` images of one class.

    Both are divided by the square of the image's normalisation scale (max - min of the noisy
    image for ``minmax``; 1 for ``flux``), exactly as the simulator normalises its output.
    """
    if class_name not in CLASS_IDS:
        raise ValueError(f"unknown class {class_name!r}")
    flux = dataclasses.replace(preset, normalisation="flux")  # the noisy image, unscaled
    sub, noise = [], []
    for start in range(0, n_images, batch):
        idx = torch.arange(start, min(start + batch, n_images))
        p = draw_parameters(preset, class_name, idx, seed)
        clean = render_noiseless(preset, p, substructure=True, dtype=torch.float64)
        smooth = render_noiseless(preset, p, substructure=False, dtype=torch.float64)
        sigma = noise_sigma(preset, p, clean)
        if preset.normalisation == "minmax":
            noisy = observe(flux, clean, sigma, seed, class_name, idx).double()
            scale2 = (noisy.amax((1, 2)) - noisy.amin((1, 2))).clamp_min(1e-12) ** 2
        else:
            scale2 = torch.ones(len(idx), dtype=torch.float64)
        sub.append((((clean - smooth) ** 2).mean((1, 2)) / scale2).numpy())
        noise.append(((sigma**2).expand_as(clean).mean((1, 2)) / scale2).numpy())
    return ResidualPower(np.concatenate(sub), np.concatenate(noise))


def published_excess(scores: dict[str, np.ndarray], model: str, dataset: str) -> dict[str, float]:
    """Excess mean anomaly score over normal images, per anomaly class, from published scores.

    ``scores`` maps ``<model>__<dataset>__<class>`` to per-image reconstruction errors, as in
    DeepLense's 2020 score file.
    """
    normal = float(np.mean(scores[f"{model}__{dataset}__no_sub"]))
    return {
        cls: float(np.mean(scores[f"{model}__{dataset}__{cls}"])) - normal
        for cls in ("cdm", "vortex")
    }
