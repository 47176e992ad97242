"""Is one more small mass needed? A linearised likelihood-ratio test on top of the smooth fit.

A small point mass at position ``p`` with Einstein radius ``b`` deflects light by
``b^2 alpha(x; p)``, ``alpha = (x - p) / |x - p|^2``, which moves every pixel's source-plane
position by ``-b^2 alpha``; to first order the image changes by the template

    T_p = PSF * [ -grad S(beta(x)) . alpha(x; p) ] * (source amplitude),

linear in ``b^2``. The generalised likelihood-ratio test of "smooth lens" against "smooth
lens + one perturber at p", with the smooth lens refitted, is then ``t_p^2 = (T_p' W r)^2 /
|T_p_perp|^2_W``: ``r`` is the fit's residual, ``W`` its inverse noise variance, and
``T_p_perp`` the template with the directions the smooth model can already take (its Jacobian
and its linear components) projected out, so that only what the smooth lens cannot mimic
counts. Under the null each ``t_p^2`` is a chi-square with one degree of freedom; the
statistic is its maximum over a grid of positions (where a subhalo would most likely be), and
the argmax says where.

This is the prototype's "smooth fit against smooth fit plus one perturber", made cheap: no
second non-linear fit, one template per position.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from darklens.fit.fitter import SmoothFit, SmoothLensFitter


def position_grid(extent: float, n: int) -> tuple[Tensor, Tensor]:
    """(n * n,) x and y of a square grid over [-extent, extent]^2 (arcsec)."""
    t = torch.linspace(-extent, extent, n)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    return xx.reshape(-1), yy.reshape(-1)


@torch.no_grad()
def perturber_statistic(fitter: SmoothLensFitter, images: np.ndarray | Tensor,
                        fit: SmoothFit, grid: int = 16,
                        extent_fraction: float = 0.4) -> dict[str, np.ndarray]:
    """Max over a ``grid`` x ``grid`` of positions (within ``extent_fraction`` of the field of
    view from the centre) of the perturber statistic ``t^2``, and where it is largest.

    images (N, H, W) or (N, 1, H, W): the images ``fit`` was fitted to. Returns ``t2``
    (N,), ``x``, ``y`` (N,) in arcsec; 0 and NaN where an image was not fitted.
    """
    inst, renderer = fitter.inst, fitter.renderer
    x = torch.as_tensor(np.asarray(images), dtype=torch.float32).reshape(len(fit), -1)
    px, py = position_grid(extent_fraction * inst.field_of_view, grid)
    floor = (0.5 * inst.pixel_scale) ** 2
    t2_out = np.zeros(len(fit))
    where = np.full((len(fit), 2), np.nan)
    for i in range(len(fit)):
        if not fit.converged[i]:
            continue
        u = torch.as_tensor(fit.u[i : i + 1])
        data = x[i : i + 1]
        model = torch.as_tensor(fit.model[i].reshape(1, -1))
        light = model - float(fit.params["background"][i])
        var = float(fit.params["noise_s0"][i]) + float(fit.params["noise_s1"][i]) * \
            light.clamp_min(0)
        sqrt_w = var.rsqrt()
        r_w, jac_t = fitter._residual_and_jacobian(u, data, sqrt_w)  # (1, P), (1, K, P)
        comps = renderer.components(u)  # (1, C, P)
        design = torch.cat([jac_t[0].T, (sqrt_w * comps[0]).T, sqrt_w.T], 1)  # (P, K + C + 1)
        q, _ = torch.linalg.qr(design.double())
        # gradient of the lensed source at every (sub)pixel
        p, bx, by = renderer.source_plane(u)
        with torch.enable_grad():
            bx, by = bx.detach().requires_grad_(), by.detach().requires_grad_()
            s = renderer.source_light(p, bx, by)
            gx, gy = torch.autograd.grad(s.sum(), (bx, by))
        dx = renderer.x - px.view(-1, 1)  # (T, P_sub)
        dy = renderer.y - py.view(-1, 1)
        r2 = (dx * dx + dy * dy).clamp_min(floor)
        sub = -(gx * dx + gy * dy) / r2  # t^2 does not depend on the template's scale
        templates = renderer.observe(sub.unsqueeze(0), p)[0]  # (T, P)
        tw = (templates * sqrt_w).double()
        perp = tw - (tw @ q) @ q.T
        # the template's part outside the smooth model's directions against the residual: the
        # likelihood ratio of one more point mass, bounded by the residual chi-square even
        # where the fit has not quite reached its minimum
        num = (perp @ r_w[0].double()) ** 2
        den = perp.square().sum(-1)
        ok = den > 1e-9 * den.max().clamp_min(1e-300)
        t2 = torch.where(ok, num / den.clamp_min(1e-300), torch.zeros_like(num))
        k = int(t2.argmax())
        t2_out[i] = float(t2[k])
        where[i] = (float(px[k]), float(py[k]))
    return {"t2": t2_out, "x": where[:, 0], "y": where[:, 1]}
