"""Rendering drawn parameters into noiseless images (the simulator's second step).

``render_noiseless`` takes the compiled path (:mod:`darklens.simulate.compiled`: one fused loop
over the pixels) for float32 where it is available, else the eager one built from the
per-component lensing functions of :mod:`darklens.simulate.physics`; the two agree to float
rounding (``tests/simulate/test_compiled.py``). The choice of path is
``darklens.simulate.backend.dispatch``'s.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from darklens.simulate import compiled, physics
from darklens.simulate.backend import dispatch
from darklens.simulate.presets import Preset


def _deflection(
    preset: Preset, p: dict[str, Tensor], x: Tensor, y: Tensor, substructure: bool
) -> tuple[Tensor, Tensor]:
    """Total deflection (B, P) at positions x, y (1, P)."""

    def col(key: str) -> Tensor:
        return p[key].view(-1, 1)

    ax, ay = physics.sie_deflection(
        x,
        y,
        col("theta_e"),
        col("lens_q"),
        col("lens_phi"),
        col("lens_center_x"),
        col("lens_center_y"),
    )
    g1, g2 = physics.shear_components(col("shear_gamma"), col("shear_angle"))
    sx, sy = physics.shear_deflection(x - col("lens_center_x"), y - col("lens_center_y"), g1, g2)
    ax, ay = ax + sx, ay + sy
    if not substructure:
        return ax, ay
    if bool(p["sub_mask"].any()):
        mask = p["sub_mask"].unsqueeze(-1)
        xs, ys = x.unsqueeze(1), y.unsqueeze(1)  # (1, 1, P)

        def sub(key: str) -> Tensor:
            return torch.nan_to_num(p[key], nan=1.0).unsqueeze(-1)  # (B, S, 1)

        if preset.cdm_profile == "tnfw":
            dx, dy = physics.tnfw_deflection(
                xs,
                ys,
                sub("sub_rs"),
                sub("sub_alpha_rs"),
                sub("sub_rt"),
                sub("sub_x"),
                sub("sub_y"),
            )
            ax = ax + torch.where(mask, dx, 0.0).sum(1)
            ay = ay + torch.where(mask, dy, 0.0).sum(1)
        else:
            theta = torch.where(p["sub_mask"], torch.nan_to_num(p["sub_theta_e"]), 0.0)
            dx, dy = physics.point_masses_deflection(
                x, y, theta, torch.nan_to_num(p["sub_x"]), torch.nan_to_num(p["sub_y"])
            )
            ax, ay = ax + dx, ay + dy
    has_vortex = p["vortex_theta_e"] > 0
    if bool(has_vortex.any()):
        if preset.vortex_profile == "line":
            dx, dy = physics.line_mass_deflection(
                x,
                y,
                col("vortex_theta_e"),
                col("vortex_length").clamp_min(1e-6),
                col("vortex_angle"),
                col("vortex_x"),
                col("vortex_y"),
            )
        elif preset.vortex_profile == "points":
            k = preset.vortex_points
            frac = (torch.arange(k, dtype=x.dtype) / max(k - 1, 1) - 0.5).view(1, -1, 1)
            c, s = (
                torch.cos(col("vortex_angle")).unsqueeze(1),
                torch.sin(col("vortex_angle")).unsqueeze(1),
            )
            length = col("vortex_length").unsqueeze(1)
            cx = col("vortex_x").unsqueeze(1) + frac * length * c
            cy = col("vortex_y").unsqueeze(1) + frac * length * s
            te = (col("vortex_theta_e") / math.sqrt(k)).expand(-1, k)
            dx, dy = physics.point_masses_deflection(x, y, te, cx[..., 0], cy[..., 0])
        else:
            raise ValueError(f"unknown vortex_profile {preset.vortex_profile!r}")
        keep = has_vortex.view(-1, 1)
        ax = ax + torch.where(keep, dx, 0.0)
        ay = ay + torch.where(keep, dy, 0.0)
    return ax, ay


def render_noiseless(
    preset: Preset,
    p: dict[str, Tensor],
    substructure: bool = True,
    dtype: torch.dtype = torch.float32,
    backend: str | None = None,
) -> Tensor:
    """Noiseless images (B, H, W) in counts/s per pixel, PSF applied.

    float32 renders take the compiled path where it is available (see
    :mod:`darklens.simulate.compiled`; ``backend`` overrides ``$DARKLENS_SIM_BACKEND``), float64
    renders the eager one. The two agree to float rounding.
    """
    return dispatch(
        backend,
        p["theta_e"].shape[0],
        lambda: _render_compiled(preset, p, substructure),
        lambda: _render_eager(preset, p, substructure, dtype),
        eligible=dtype == torch.float32,
    )


def _psf_taps(preset: Preset, p: dict[str, Tensor], dtype: torch.dtype) -> Tensor | None:
    """Per-image 1-D Gaussian PSF taps (B, 2R+1), or None when no image has a PSF.

    The half-width R is 4 sigma of the widest PSF the preset can draw (or of this batch, if
    wider), so it does not depend on which images share a batch.
    """
    sigma_pix = physics.fwhm_to_sigma(p["psf_fwhm"]) / preset.pixel_scale
    if not bool((sigma_pix > 0).any()):
        return None
    prior = preset.psf_fwhm
    widest = max(float(prior.high if prior.high is not None else prior.low),
                 float(p["psf_fwhm"].max()))
    radius = compiled.psf_radius(preset.pixel_scale, widest)
    return physics.gaussian_kernel_1d(sigma_pix, radius, dtype)


def _render_compiled(preset: Preset, p: dict[str, Tensor], substructure: bool) -> Tensor:
    """``render_noiseless`` through the compiled graph (float32)."""
    lens = compiled.lens_columns(p)
    source = compiled.sersic_columns(
        p["source_amp"], p["source_r_eff"], p["source_n"], p["source_q"], p["source_phi"],
        p["source_x"], p["source_y"],
    )
    light = None
    if bool((p["lens_light_amp"] > 0).any()):
        light = compiled.sersic_columns(
            p["lens_light_amp"], p["lens_light_r_eff"], p["lens_light_n"], p["lens_light_q"],
            p["lens_phi"], p["lens_center_x"], p["lens_center_y"],
        )
    points, tnfw, line = [], None, None
    if substructure and bool(p["sub_mask"].any()):
        mask = p["sub_mask"]
        if preset.cdm_profile == "tnfw":
            cols = [torch.nan_to_num(p[k], nan=1.0) for k in ("sub_x", "sub_y", "sub_rs")]
            cols.append(torch.where(mask, torch.nan_to_num(p["sub_alpha_rs"]), 0.0))
            cols.append(torch.nan_to_num(p["sub_rt"], nan=1.0))
            tnfw = torch.stack(cols).transpose(1, 2)  # (5, S, B)
        else:
            theta = torch.where(mask, torch.nan_to_num(p["sub_theta_e"]), 0.0)
            points.append(physics.point_mass_constants(
                theta, torch.nan_to_num(p["sub_x"]), torch.nan_to_num(p["sub_y"])))
    has_vortex = p["vortex_theta_e"] > 0
    if substructure and bool(has_vortex.any()):
        te = torch.where(has_vortex, p["vortex_theta_e"], 0.0)
        c, s = torch.cos(p["vortex_angle"]), torch.sin(p["vortex_angle"])
        length = p["vortex_length"].clamp_min(1e-6)
        if preset.vortex_profile == "line":
            line = torch.stack(physics.line_mass_constants(
                te, length, p["vortex_angle"], p["vortex_x"], p["vortex_y"]), 1)
        elif preset.vortex_profile == "points":
            k = preset.vortex_points
            frac = (torch.arange(k, dtype=torch.float64) / max(k - 1, 1) - 0.5).view(1, -1)
            cx = p["vortex_x"].view(-1, 1) + frac * p["vortex_length"].view(-1, 1) * c.view(-1, 1)
            cy = p["vortex_y"].view(-1, 1) + frac * p["vortex_length"].view(-1, 1) * s.view(-1, 1)
            th2 = (te * te / k).view(-1, 1).expand(-1, k)
            points.append((cx, cy, th2))
        else:
            raise ValueError(f"unknown vortex_profile {preset.vortex_profile!r}")
    table = None
    if points:
        table = torch.stack([torch.cat(c, 1) for c in zip(*points, strict=True)])
        table = table.transpose(1, 2)  # (3, S, B)
    f = preset.supersample
    m = preset.n_pix * f
    x, y = physics.pixel_grid(preset.n_pix, preset.pixel_scale, f, torch.float32)
    return compiled.render(
        x.view(1, m, m), y.view(1, m, m), lens, source, light, table, tnfw, line,
        _psf_taps(preset, p, torch.float32),
        n_pix=preset.n_pix, factor=f, pixel_scale=preset.pixel_scale,
    )


def _render_eager(
    preset: Preset, p: dict[str, Tensor], substructure: bool, dtype: torch.dtype
) -> Tensor:
    """``render_noiseless`` in eager PyTorch, any dtype."""
    b = p["theta_e"].shape[0]
    f = preset.supersample
    x, y = physics.pixel_grid(preset.n_pix, preset.pixel_scale, f, dtype)
    q = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in p.items()}

    def col(key: str) -> Tensor:
        return q[key].view(-1, 1)

    ax, ay = _deflection(preset, q, x, y, substructure)
    sb = physics.sersic_profile(
        x - ax,
        y - ay,
        col("source_amp"),
        col("source_r_eff"),
        col("source_n"),
        col("source_q"),
        col("source_phi"),
        col("source_x"),
        col("source_y"),
    )
    if bool((p["lens_light_amp"] > 0).any()):
        sb = sb + physics.sersic_profile(
            x,
            y,
            col("lens_light_amp"),
            col("lens_light_r_eff"),
            col("lens_light_n"),
            col("lens_light_q"),
            col("lens_phi"),
            col("lens_center_x"),
            col("lens_center_y"),
        )
    m = preset.n_pix * f
    img = physics.downsample(sb.view(b, m, m), f) * preset.pixel_scale**2
    taps = _psf_taps(preset, p, dtype)
    if taps is not None:
        img = physics.convolve_separable(img, taps, taps)
    return img
