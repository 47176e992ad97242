"""Physical pseudo-anomalies: normal lenses re-rendered with small random point-mass perturbers.

Label-free model selection needs anomalies that look like the real ones without using any.
A patch swap (``darklens.data.transforms.local_patch_swap``) is an image edit that no lens
makes; here the simulator renders the *same* no_sub lens (same macro model, source, lens light
and noise field: image ``i`` under ``seed`` is a pure function of ``(preset, seed, i)``) with
1 to ``max_perturbers`` point masses added near the Einstein ring. Their masses and positions
come from a broad prior that is deliberately not the preset's CDM or vortex prior:

- total Einstein-radius-squared fraction f = sum theta_sub^2 / theta_E^2, log-uniform in
  ``fraction`` (default 0.003 to 0.1), split evenly among the perturbers;
- each at a radius uniform in ``radius`` x theta_E (default 0.6 to 1.4: on and around the
  ring, where a perturber deflects lensed light) and a uniform angle around the lens centre.

The noise sigma is that of the unperturbed image, and the noise field is the image's own, so a
pseudo-anomaly differs from its normal image only by the perturbers' lensing.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from torch import Tensor

from darklens.simulate.observation import noise_sigma as _noise_sigma
from darklens.simulate.observation import observe
from darklens.simulate.parameters import draw_parameters
from darklens.simulate.presets import Preset, get_preset
from darklens.simulate.render import render_noiseless


def perturbed_normals(
    preset: Preset | str,
    indices: np.ndarray | Tensor,
    seed: int,
    pseudo_seed: int = 0,
    max_perturbers: int = 3,
    fraction: tuple[float, float] = (0.003, 0.1),
    radius: tuple[float, float] = (0.6, 1.4),
    batch_size: int = 256,
) -> Tensor:
    """The no_sub images ``indices`` under ``seed`` with random point masses: (B, 1, H, W).

    ``pseudo_seed`` draws the perturbers (independent of the lens draws). Rendered on the eager
    path (a few hundred images; compiling would not repay itself).
    """
    if max_perturbers < 1:
        raise ValueError(f"max_perturbers must be at least 1, got {max_perturbers}")
    preset = get_preset(preset) if isinstance(preset, str) else preset
    point = dataclasses.replace(preset, cdm_profile="point")
    idx_all = torch.as_tensor(np.asarray(indices), dtype=torch.int64)
    gen = np.random.default_rng(pseudo_seed)
    out = []
    for start in range(0, idx_all.shape[0], batch_size):
        idx = idx_all[start:start + batch_size]
        p = draw_parameters(preset, "no_sub", idx, seed)
        sigma = _noise_sigma(preset, p, render_noiseless(preset, p, backend="eager"))
        p.update(_perturbers(p, gen, max_perturbers, fraction, radius))
        clean = render_noiseless(point, p, substructure=True, backend="eager")
        out.append(observe(preset, clean, sigma, seed, "no_sub", idx, backend="eager"))
    return torch.cat(out).unsqueeze(1)


def point_perturbers(theta_e: np.ndarray, center_x: np.ndarray, center_y: np.ndarray,
                     gen: np.random.Generator, k_max: int = 3,
                     fraction: tuple[float, float] = (0.003, 0.1),
                     radius: tuple[float, float] = (0.6, 1.4)) -> dict[str, np.ndarray]:
    """Random point-mass perturbers for lenses of Einstein radius ``theta_e`` (B,) centred on
    ``center_x, center_y`` (B,), from the broad prior of the module docstring: 1 to ``k_max``
    masses per lens sharing a total theta_sub^2 / theta_E^2 log-uniform in ``fraction``, each
    at ``radius`` x theta_E (uniform) and a uniform angle. Returns ``mask`` (B, k_max) and
    ``theta_e``, ``x``, ``y`` (B, k_max), NaN where ``mask`` is False."""
    b = theta_e.shape[0]
    count = gen.integers(1, k_max + 1, size=b)
    mask = np.arange(k_max)[None, :] < count[:, None]
    f = np.exp(gen.uniform(math.log(fraction[0]), math.log(fraction[1]), size=b))
    theta_sub = theta_e[:, None] * np.sqrt(f / count)[:, None] * np.ones((1, k_max))
    r = theta_e[:, None] * gen.uniform(radius[0], radius[1], size=(b, k_max))
    phi = gen.uniform(0.0, 2 * math.pi, size=(b, k_max))
    x = center_x[:, None] + r * np.cos(phi)
    y = center_y[:, None] + r * np.sin(phi)
    return {"mask": mask, "theta_e": np.where(mask, theta_sub, np.nan),
            "x": np.where(mask, x, np.nan), "y": np.where(mask, y, np.nan)}


def _perturbers(p: dict[str, Tensor], gen: np.random.Generator, k_max: int,
                fraction: tuple[float, float], radius: tuple[float, float]) -> dict[str, Tensor]:
    """Point-mass subhalo columns (``sub_mask``, ``sub_theta_e``, ``sub_x``, ``sub_y``)."""
    drawn = point_perturbers(p["theta_e"].numpy(), p["lens_center_x"].numpy(),
                             p["lens_center_y"].numpy(), gen, k_max, fraction, radius)
    return {"sub_mask": torch.as_tensor(drawn["mask"]),
            "sub_theta_e": torch.as_tensor(drawn["theta_e"]),
            "sub_x": torch.as_tensor(drawn["x"]), "sub_y": torch.as_tensor(drawn["y"])}


def pseudo_for_data(data: object, rows: np.ndarray, pseudo_seed: int = 0) -> Tensor | None:
    """Physical pseudo-anomalies for the no_sub images ``rows`` of a data set darklens simulated.

    The data must say how they were made (``attrs["preset"]`` and ``attrs["seed"]``, and the
    per-image ``metadata["index"]``, as ``simulate_dataset`` and ``darklens simulate`` record
    them); otherwise, or for an empty selection, None (the caller falls back to patch swaps).
    Returned as the simulator renders them, before any normalisation of the training run.
    """
    from darklens.simulate.presets import from_dict

    attrs = getattr(data, "attrs", None) or {}
    meta = getattr(data, "metadata", None) or {}
    rows = np.asarray(rows)
    if rows.size == 0 or not isinstance(attrs.get("preset"), dict) or "seed" not in attrs \
            or "index" not in meta:
        return None
    try:
        preset = from_dict(attrs["preset"])
        seed = int(attrs["seed"])
    except (TypeError, ValueError):
        return None
    index = np.asarray(meta["index"])[rows].astype(np.int64)
    return perturbed_normals(preset, index, seed, pseudo_seed=pseudo_seed)
