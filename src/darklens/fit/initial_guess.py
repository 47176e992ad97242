"""Starting points for the fit, read off the image itself (no training, no labels).

The light's centroid gives the lens centre, its flux-weighted radius about that centre the
Einstein radius, and its dipole the side the source sits on (the brighter arc is on the
source's side). A few starts around that guess, at other ring radii and source offsets, cover
the cases the moments get wrong; the fitter keeps the best. A trained network
(:mod:`darklens.fit.amortised`) replaces these with one better start where it exists.
"""

from __future__ import annotations

import torch
from torch import Tensor

from darklens.fit import noise
from darklens.fit.instrument import Instrument
from darklens.fit.smooth_model import parameter_specs, to_unconstrained
from darklens.simulate import physics

# (Einstein-radius scale, source offset as a fraction of the radius along the dipole)
DEFAULT_STARTS: tuple[tuple[float, float], ...] = ((1.0, 0.1), (1.0, 0.35), (0.8, 0.2),
                                                   (1.25, 0.2))


def moments(images: Tensor, inst: Instrument) -> dict[str, Tensor]:
    """Centroid, flux-weighted radius and unit dipole (each (B,)) of flattened images (B, P)."""
    level, sigma = noise.border_sigma(images, inst.n_pix)
    signal = (images - level.unsqueeze(-1) - 2 * sigma.unsqueeze(-1)).clamp_min(0)
    total = signal.sum(-1).clamp_min(1e-30)
    x, y = physics.pixel_grid(inst.n_pix, inst.pixel_scale, 1, images.dtype)
    cx = (signal * x).sum(-1) / total
    cy = (signal * y).sum(-1) / total
    dx, dy = x - cx.unsqueeze(-1), y - cy.unsqueeze(-1)
    r = torch.sqrt(dx * dx + dy * dy)
    radius = (signal * r).sum(-1) / total
    # dipole of the light about the centroid, weighted by distance so the ring dominates
    px = (signal * dx * r).sum(-1)
    py = (signal * dy * r).sum(-1)
    norm = torch.sqrt(px * px + py * py).clamp_min(1e-30)
    return {"cx": cx, "cy": cy, "radius": radius, "ux": px / norm, "uy": py / norm}


def heuristic_starts(images: Tensor, inst: Instrument,
                     starts: tuple[tuple[float, float], ...] = DEFAULT_STARTS) -> Tensor:
    """Unconstrained starting points (S, B, K) for flattened images (B, P)."""
    m = moments(images.float(), inst)
    specs = parameter_specs(inst)
    b = images.shape[0]
    fov = inst.field_of_view
    out = []
    for scale, offset in starts:
        theta = (m["radius"] * scale).clamp(2.5 * inst.pixel_scale, 0.4 * fov)
        zeros = torch.zeros(b)
        phys = {
            "theta_e": theta, "lens_x": m["cx"], "lens_y": m["cy"],
            "lens_e1": zeros, "lens_e2": zeros, "gamma1": zeros, "gamma2": zeros,
            "source_x": m["cx"] + offset * theta * m["ux"],
            "source_y": m["cy"] + offset * theta * m["uy"],
            "source_r_eff": torch.full((b,), 0.15), "source_n": torch.full((b,), 1.5),
            "source_e1": zeros, "source_e2": zeros,
            "light_r_eff": torch.full((b,), 0.5), "light_n": torch.full((b,), 2.5),
            "light_e1": zeros, "light_e2": zeros,
            "psf_fwhm": torch.full((b,), 2.0 * inst.pixel_scale),
        }
        out.append(to_unconstrained(phys, specs))
    return torch.stack(out)
