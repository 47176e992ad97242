"""Each image's own noise: a background level from its border, a Poisson gain from its arcs.

The variance model is ``sigma^2 = s0 + s1 * max(light, 0)``, ``light`` being the fitted model
above its background: ``s0`` from the median absolute deviation of a frame of border pixels
(where a lens image has no light), ``s1`` (photon noise) from the fit's own residuals on the
bright pixels, by a median so that a few pixels of substructure hardly move it. Both are per
image, so min-max normalised data (whose scale differs from image to image) need nothing
else; the dark-pixel chi-square then measures how well the border estimate did.
"""

from __future__ import annotations

import torch
from torch import Tensor

MAD_TO_SIGMA = 1.4826
MEDIAN_CHI2_1 = 0.4549364  # median of a chi-square with one degree of freedom


def border_mask(n_pix: int, width: int = 4) -> Tensor:
    """(n_pix * n_pix,) boolean mask of a frame ``width`` pixels wide."""
    idx = torch.arange(n_pix)
    edge = (idx < width) | (idx >= n_pix - width)
    return (edge.view(-1, 1) | edge.view(1, -1)).reshape(-1)


def border_sigma(images: Tensor, n_pix: int, width: int = 4) -> tuple[Tensor, Tensor]:
    """Background level and robust sigma (each (B,)) of flattened images (B, P)."""
    frame = images[:, border_mask(n_pix, width)]
    level = frame.median(-1).values
    mad = (frame - level.unsqueeze(-1)).abs().median(-1).values
    return level, (MAD_TO_SIGMA * mad).clamp_min(1e-8 * images.abs().amax(-1).clamp_min(1e-30))


def poisson_gain(residual: Tensor, light: Tensor, s0: Tensor, bright: float = 0.1,
                 iterations: int = 30) -> Tensor:
    """Per-image ``s1`` so that the median of ``r^2 / (s0 + s1 light)`` over bright pixels is
    the median of a chi-square with one degree of freedom (0 when the background explains it).

    residual, light (B, P); s0 (B,). Bright pixels: light above ``bright`` of its maximum.
    Found by bisection in log space (monotone in ``s1``).
    """
    peak = light.amax(-1, keepdim=True).clamp_min(1e-30)
    mask = light > bright * peak
    r2 = residual * residual
    lo = torch.full_like(s0, -12.0)  # log10 of s1 / (s0 / peak)
    hi = torch.full_like(s0, 8.0)
    unit = (s0 / peak.squeeze(-1)).clamp_min(1e-30)

    def excess(log_s1: Tensor) -> Tensor:
        var = s0.unsqueeze(-1) + (unit * 10**log_s1).unsqueeze(-1) * light.clamp_min(0)
        ratio = torch.where(mask, r2 / var, torch.nan)
        return ratio.nanmedian(-1).values - MEDIAN_CHI2_1

    none_needed = excess(lo) <= 0
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        too_big = excess(mid) > 0
        lo = torch.where(too_big, mid, lo)
        hi = torch.where(too_big, hi, mid)
    s1 = unit * 10 ** (0.5 * (lo + hi))
    return torch.where(none_needed | ~mask.any(-1), torch.zeros_like(s1), s1)


def binned_variance(residual: Tensor, light: Tensor, bins: int = 8) -> tuple[Tensor, Tensor]:
    """Per-image ``(s0, s1)`` of ``sigma^2 = s0 + s1 light`` from the fit's residuals.

    Pixels are sorted by model brightness into ``bins`` equal groups; in each, the variance is
    the median squared residual over the median of a one-degree chi-square (robust to the few
    pixels a substructure disturbs); a straight line through the groups' (mean light, variance)
    points, weighted by relative precision, gives s0 and s1 (both kept >= 0).
    """
    b, p = residual.shape
    per = p // bins
    order = light.argsort(-1)[:, : per * bins]
    lit = light.gather(-1, order).view(b, bins, per)
    r2 = residual.gather(-1, order).square().view(b, bins, per)
    var = r2.median(-1).values / MEDIAN_CHI2_1  # (B, bins)
    x = lit.mean(-1).clamp_min(0)
    w = 1.0 / var.clamp_min(1e-30) ** 2
    sw, sx, sy = w.sum(-1), (w * x).sum(-1), (w * var).sum(-1)
    sxx, sxy = (w * x * x).sum(-1), (w * x * var).sum(-1)
    det = (sw * sxx - sx * sx).clamp_min(1e-30)
    s1 = ((sw * sxy - sx * sy) / det).clamp_min(0)
    s0 = ((sy - s1 * sx) / sw).clamp_min(1e-6 * var.amin(-1).clamp_min(1e-30))
    return s0, s1
