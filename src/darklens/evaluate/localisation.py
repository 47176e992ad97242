"""How often a where-map's peak falls on the true substructure of a simulated image.

The simulator records the truth in each image's metadata (arcsec, origin at the image centre,
x along columns and y along rows, as :func:`darklens.simulate.physics.pixel_grid`): subhalo
positions ``subhalo_x``, ``subhalo_y`` (NaN-padded), and the vortex line's centre
``vortex_x``, ``vortex_y``, direction ``vortex_angle`` and length ``vortex_length``. The peak of
a map (after a Gaussian smoothing of ``smooth`` pixels, so that one noisy pixel does not win)
is a hit when it lies within ``radius`` arcsec of a subhalo (cdm) or of the vortex segment.
``chance`` is the hit rate of a peak placed uniformly at random: the share of pixels within
``radius`` of the truth, averaged over the images.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from darklens.evaluate.where_maps import gaussian_blur

RADIUS = 0.3  # arcsec


def pixel_coordinates(n_pix: int, pixel_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) in arcsec of every pixel centre, each (n_pix, n_pix): x along columns."""
    c = (np.arange(n_pix) - (n_pix - 1) / 2.0) * pixel_scale
    y, x = np.meshgrid(c, c, indexing="ij")
    return x, y


def truth_distance(metadata: Mapping[str, np.ndarray], i: int, kind: str, x: np.ndarray,
                   y: np.ndarray) -> np.ndarray:
    """Distance (arcsec) from each point (x, y) to image ``i``'s substructure of ``kind``."""
    if kind == "cdm":
        sx = np.asarray(metadata["subhalo_x"][i], dtype=np.float64).ravel()
        sy = np.asarray(metadata["subhalo_y"][i], dtype=np.float64).ravel()
        ok = np.isfinite(sx) & np.isfinite(sy)
        if not ok.any():
            return np.full(np.shape(x), np.inf)
        d = np.hypot(x[..., None] - sx[ok], y[..., None] - sy[ok])
        return d.min(axis=-1)
    if kind == "vortex":
        cx, cy = float(metadata["vortex_x"][i]), float(metadata["vortex_y"][i])
        a, half = float(metadata["vortex_angle"][i]), 0.5 * float(metadata["vortex_length"][i])
        ux, uy = np.cos(a), np.sin(a)
        t = np.clip((x - cx) * ux + (y - cy) * uy, -half, half)  # along the segment
        return np.hypot(x - (cx + t * ux), y - (cy + t * uy))
    raise ValueError(f"no substructure truth for class {kind!r}")


def peaks(maps: np.ndarray, smooth: float = 1.0) -> np.ndarray:
    """(row, col) of each map's maximum after Gaussian smoothing, (N, 2); NaN maps -> -1."""
    m = torch.as_tensor(np.nan_to_num(maps, nan=-np.inf), dtype=torch.float32).unsqueeze(1)
    finite = torch.isfinite(m).flatten(1).any(dim=1)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    if smooth > 0:
        m = gaussian_blur(m, smooth)
    flat = m.flatten(1).argmax(dim=1)
    out = torch.stack([flat // maps.shape[-1], flat % maps.shape[-1]], dim=1).numpy()
    out[~finite.numpy()] = -1
    return out


def localisation(maps: np.ndarray, metadata: Mapping[str, np.ndarray], kinds: list[str],
                 pixel_scale: float, radius: float = RADIUS, smooth: float = 1.0
                 ) -> dict[str, dict[str, float]]:
    """Per class: ``hit_rate`` of the peaks, ``chance`` and ``n`` (see the module docstring).

    ``maps`` (N, H, W), ``kinds[k]`` the class of image k, ``metadata`` indexed by k too.
    """
    x, y = pixel_coordinates(maps.shape[-1], pixel_scale)
    pk = peaks(maps, smooth)
    hits: dict[str, list[bool]] = {}
    chance: dict[str, list[float]] = {}
    for k, kind in enumerate(kinds):
        if kind not in ("cdm", "vortex"):
            continue
        d = truth_distance(metadata, k, kind, x, y)
        r, c = pk[k]
        hits.setdefault(kind, []).append(bool(r >= 0 and d[r, c] <= radius))
        chance.setdefault(kind, []).append(float((d <= radius).mean()))
    out = {kind: {"hit_rate": float(np.mean(h)), "chance": float(np.mean(chance[kind])),
                  "n": len(h)} for kind, h in hits.items()}
    if hits:
        every = [v for h in hits.values() for v in h]
        out["all"] = {"hit_rate": float(np.mean(every)),
                      "chance": float(np.mean([v for c in chance.values() for v in c])),
                      "n": len(every)}
    return out
