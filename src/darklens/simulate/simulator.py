"""Draw parameters from a preset and render batches of lensing images with their metadata.

Image ``i`` of class ``c`` under seed ``s`` is a pure function of ``(preset, s, c, i)`` and of the
rendering path: its random numbers come from :mod:`darklens.simulate.rng`, so it is
byte-identical whatever batch, worker or shard renders it. float32 images render on the
compiled path (:mod:`darklens.simulate.compiled`, fused C++ loops) where a C++ compiler is
found, else eager; the two paths agree to float rounding (about 1e-6 of the peak), not bit for
bit, and every data set records the path it took (``attrs["simulator_backend"]``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from darklens import __version__
from darklens.data.lensdata import CLASSES, LensData
from darklens.simulate import compiled, cosmology, physics, rng
from darklens.simulate.presets import Preset, get_preset
from darklens.simulate.rng import uniforms

CLASS_IDS = {name: i for i, name in enumerate(CLASSES)}

# Slots of the per-image "params" stream; appending keeps earlier draws unchanged.
_SLOTS = (
    "lens_mass theta_e lens_q lens_phi lens_cx lens_cy shear_gamma shear_angle "
    "ll_amp ll_r_eff ll_n ll_q src_amp src_mag src_r_eff src_n src_q src_phi src_a src_b "
    "psf_fwhm snr exposure cdm_count cdm_fraction vortex_mass vortex_fraction vortex_length "
    "axion_mass vortex_angle vortex_r vortex_t"
).split()
_SLOT = {name: i for i, name in enumerate(_SLOTS)}
_SUB_DRAWS = 4  # mass, radius, angle, concentration per subhalo
_MAX_CHUNK_ELEMENTS = 1 << 24


def max_subhalos(preset: Preset) -> int:
    """Padding size of the subhalo arrays: a Poisson tail far beyond any realistic draw."""
    mean = float(preset.cdm_count)
    if not preset.cdm_count_poisson:
        return max(int(round(mean)), 1)
    return int(math.ceil(mean + 8 * math.sqrt(mean) + 8))


def _poisson_inverse_cdf(u: Tensor, mean: float, k_max: int) -> Tensor:
    k = torch.arange(k_max + 1, dtype=torch.float64)
    log_pmf = k * math.log(mean) - mean - torch.lgamma(k + 1) if mean > 0 else None
    if log_pmf is None:
        return torch.zeros_like(u, dtype=torch.int64)
    cdf = torch.cumsum(torch.exp(log_pmf), 0)
    return (u.unsqueeze(-1) > cdf).sum(-1).clamp(max=k_max)


def _powerlaw_mass(u: Tensor, m_min: float, m_max: float, slope: float) -> Tensor:
    """Inverse CDF of dN/dm ~ m**slope on [m_min, m_max]."""
    if abs(slope + 1) < 1e-9:
        return m_min * (m_max / m_min) ** u
    a = slope + 1
    lo, hi = m_min**a, m_max**a
    return (lo + (hi - lo) * u) ** (1.0 / a)


def draw_parameters(
    preset: Preset, class_name: str, indices: Tensor, seed: int
) -> dict[str, Tensor]:
    """Every parameter of the images ``indices`` (float64 tensors, leading dimension B)."""
    if class_name not in CLASS_IDS:
        raise ValueError(f"unknown class {class_name!r}; known: {', '.join(CLASSES)}")
    cid = CLASS_IDS[class_name]
    idx = torch.as_tensor(indices, dtype=torch.int64)
    b = idx.shape[0]
    u = uniforms(seed, cid, idx, "params", len(_SLOTS))
    s = {name: u[:, i] for name, i in _SLOT.items()}
    p: dict[str, Tensor] = {}
    zl, zs, conv = preset.z_lens, preset.z_source, preset.distance_convention

    # main lens
    if preset.lens_mass is not None:
        p["lens_mass"] = preset.lens_mass.sample(s["lens_mass"])
        p["theta_e"] = torch.as_tensor(
            cosmology.einstein_radius_point_mass(p["lens_mass"].numpy(), zl, zs, conv)
        )
    else:
        p["theta_e"] = preset.theta_e.sample(s["theta_e"])
        p["lens_mass"] = torch.as_tensor(
            cosmology.mass_from_einstein_radius(p["theta_e"].numpy(), zl, zs, conv)
        )
    p["lens_q"] = preset.lens_q.sample(s["lens_q"])
    p["lens_phi"] = preset.lens_phi.sample(s["lens_phi"])
    p["lens_center_x"] = preset.lens_center.sample(s["lens_cx"])
    p["lens_center_y"] = preset.lens_center.sample(s["lens_cy"])
    p["shear_gamma"] = preset.shear_gamma.sample(s["shear_gamma"])
    p["shear_angle"] = preset.shear_angle.sample(s["shear_angle"])

    # light
    p["lens_light_amp"] = preset.lens_light_amp.sample(s["ll_amp"])
    p["lens_light_r_eff"] = preset.lens_light_r_eff.sample(s["ll_r_eff"])
    p["lens_light_n"] = preset.lens_light_n.sample(s["ll_n"])
    p["lens_light_q"] = preset.lens_light_q.sample(s["ll_q"])
    p["source_r_eff"] = preset.source_r_eff.sample(s["src_r_eff"])
    p["source_n"] = preset.source_n.sample(s["src_n"])
    p["source_q"] = preset.source_q.sample(s["src_q"])
    p["source_phi"] = preset.source_phi.sample(s["src_phi"])
    if preset.source_magnitude is not None:
        mag = preset.source_magnitude.sample(s["src_mag"])
        total = 10 ** (-0.4 * (mag - preset.zero_point))
        unit = physics.sersic_total_flux(torch.ones_like(mag), p["source_r_eff"], p["source_n"])
        p["source_amp"] = total / unit
        p["source_magnitude"] = mag
    else:
        p["source_amp"] = preset.source_amp.sample(s["src_amp"])
    if preset.source_offset_kind == "radial":
        r = preset.source_offset.sample(s["src_a"])
        t = 2 * math.pi * s["src_b"]
        p["source_x"], p["source_y"] = r * torch.cos(t), r * torch.sin(t)
    elif preset.source_offset_kind == "box":
        p["source_x"] = preset.source_offset.sample(s["src_a"])
        p["source_y"] = preset.source_offset.sample(s["src_b"])
    else:
        raise ValueError(f"unknown source_offset_kind {preset.source_offset_kind!r}")

    # instrument
    p["psf_fwhm"] = preset.psf_fwhm.sample(s["psf_fwhm"])
    p["target_snr"] = preset.snr.sample(s["snr"])
    p["exposure_time"] = preset.exposure_time.sample(s["exposure"])

    # CDM subhalos (padded to a fixed size, with a mask)
    n_max = max_subhalos(preset)
    nan = torch.full((b, n_max), float("nan"), dtype=torch.float64)
    p["sub_mask"] = torch.zeros((b, n_max), dtype=torch.bool)
    for key in ("sub_theta_e", "sub_mass", "sub_x", "sub_y", "sub_rs", "sub_alpha_rs", "sub_rt"):
        p[key] = nan.clone()
    p["n_subhalos"] = torch.zeros(b, dtype=torch.float64)
    if class_name == "cdm":
        su = uniforms(seed, cid, idx, "subhalos", n_max * _SUB_DRAWS).view(b, n_max, _SUB_DRAWS)
        if preset.cdm_count_poisson:
            count = _poisson_inverse_cdf(s["cdm_count"], preset.cdm_count, n_max)
        else:
            count = torch.full((b,), n_max, dtype=torch.int64)
        mask = torch.arange(n_max).view(1, -1) < count.view(-1, 1)
        if preset.cdm_mass_kind == "powerlaw":
            mass = _powerlaw_mass(
                su[..., 0], preset.cdm_mass_min, preset.cdm_mass_max, preset.cdm_slope
            )
            theta = torch.as_tensor(
                cosmology.einstein_radius_point_mass(mass.numpy(), zl, zs, conv)
            )
        elif preset.cdm_mass_kind == "fraction":
            frac = preset.cdm_fraction.sample(s["cdm_fraction"])
            share = frac / count.clamp(min=1).to(torch.float64)
            theta = (p["theta_e"] * torch.sqrt(share)).view(-1, 1).expand(b, n_max).clone()
            mass = torch.as_tensor(cosmology.mass_from_einstein_radius(theta.numpy(), zl, zs, conv))
        else:
            raise ValueError(f"unknown cdm_mass_kind {preset.cdm_mass_kind!r}")
        radius = preset.cdm_radius.sample(su[..., 1])
        angle = 2 * math.pi * su[..., 2]
        p["sub_mask"] = mask
        p["sub_mass"] = torch.where(mask, mass, nan)
        p["sub_theta_e"] = torch.where(mask, theta, nan)
        p["sub_x"] = torch.where(
            mask, p["lens_center_x"].view(-1, 1) + radius * torch.cos(angle), nan
        )
        p["sub_y"] = torch.where(
            mask, p["lens_center_y"].view(-1, 1) + radius * torch.sin(angle), nan
        )
        if preset.cdm_profile == "tnfw":
            conc = preset.cdm_concentration.sample(su[..., 3])
            rs, alpha_rs = cosmology.nfw_angles(mass.numpy(), conc.numpy(), zl, zs, conv)
            tau = preset.cdm_truncation.sample(su[..., 3])
            p["sub_rs"] = torch.where(mask, torch.as_tensor(rs), nan)
            p["sub_alpha_rs"] = torch.where(mask, torch.as_tensor(alpha_rs), nan)
            p["sub_rt"] = torch.where(mask, torch.as_tensor(rs) * tau, nan)
        elif preset.cdm_profile != "point":
            raise ValueError(f"unknown cdm_profile {preset.cdm_profile!r}")
        p["n_subhalos"] = count.to(torch.float64)
    p["subhalo_mass_total"] = torch.nan_to_num(p["sub_mass"]).sum(-1)
    p["f_sub_cdm"] = torch.nan_to_num(p["sub_theta_e"] ** 2).sum(-1) / p["theta_e"] ** 2

    # vortex
    zeros = torch.zeros(b, dtype=torch.float64)
    for key in (
        "vortex_mass",
        "vortex_length",
        "vortex_theta_e",
        "vortex_angle",
        "vortex_x",
        "vortex_y",
    ):
        p[key] = zeros.clone()
    p["log10_axion_mass"] = torch.full((b,), float("nan"), dtype=torch.float64)
    if class_name == "vortex":
        if preset.vortex_mass_kind == "mass":
            vm = preset.vortex_mass.sample(s["vortex_mass"])
            vt = torch.as_tensor(cosmology.einstein_radius_point_mass(vm.numpy(), zl, zs, conv))
        elif preset.vortex_mass_kind == "fraction":
            vt = p["theta_e"] * torch.sqrt(preset.vortex_fraction.sample(s["vortex_fraction"]))
            vm = torch.as_tensor(cosmology.mass_from_einstein_radius(vt.numpy(), zl, zs, conv))
        else:
            raise ValueError(f"unknown vortex_mass_kind {preset.vortex_mass_kind!r}")
        if preset.vortex_length_kind == "axion":
            m_ax = preset.axion_mass.sample(s["axion_mass"])
            p["log10_axion_mass"] = torch.log10(m_ax)
            length = 2 * torch.as_tensor(cosmology.axion_half_length(m_ax.numpy()))
        elif preset.vortex_length_kind == "fixed":
            length = preset.vortex_length.sample(s["vortex_length"])
        else:
            raise ValueError(f"unknown vortex_length_kind {preset.vortex_length_kind!r}")
        r = preset.vortex_center.sample(s["vortex_r"])
        t = 2 * math.pi * s["vortex_t"]
        p["vortex_mass"], p["vortex_theta_e"], p["vortex_length"] = vm, vt, length
        p["vortex_angle"] = 2 * math.pi * s["vortex_angle"]
        p["vortex_x"] = p["lens_center_x"] + r * torch.cos(t)
        p["vortex_y"] = p["lens_center_y"] + r * torch.sin(t)
    p["f_sub"] = p["f_sub_cdm"] + p["vortex_theta_e"] ** 2 / p["theta_e"] ** 2
    return p


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
    return compiled.dispatch(
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
            points.append(
                (torch.nan_to_num(p["sub_x"]), torch.nan_to_num(p["sub_y"]), theta * theta)
            )
    has_vortex = p["vortex_theta_e"] > 0
    if substructure and bool(has_vortex.any()):
        te = torch.where(has_vortex, p["vortex_theta_e"], 0.0)
        c, s = torch.cos(p["vortex_angle"]), torch.sin(p["vortex_angle"])
        length = p["vortex_length"].clamp_min(1e-6)
        if preset.vortex_profile == "line":
            line = torch.stack(
                [p["vortex_x"] - 0.5 * length * c, p["vortex_y"] - 0.5 * length * s, c, s,
                 length, te * te / length],
                1,
            )
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


def _noise_sigma(
    preset: Preset, p: dict[str, Tensor], clean: Tensor, power: Tensor | None = None
) -> Tensor:
    """Noise standard deviation in counts/s: per image (B, 1, 1) or per pixel (B, H, W).

    ``power`` is :func:`_power` of ``clean`` when the caller has it already.
    """
    if preset.noise == "none":
        return clean.new_zeros((clean.shape[0], 1, 1))
    if preset.noise == "snr":
        power = _power(clean) if power is None else power
        return (torch.sqrt(power) / p["target_snr"]).to(clean.dtype).view(-1, 1, 1)
    if preset.noise == "counts":
        t = p["exposure_time"].to(clean.dtype).view(-1, 1, 1)
        counts_var = (clean.clamp_min(0) + preset.sky_level) * t
        counts_var = counts_var + (preset.background_rms * t) ** 2
        counts_var = counts_var + preset.read_noise**2 * preset.num_exposures
        return torch.sqrt(counts_var / t**2)
    raise ValueError(f"unknown noise model {preset.noise!r}")


def _power(images: Tensor) -> Tensor:
    """Sum of squares of each image (B,), float64 (no temporary image: the norm's own loop)."""
    return torch.linalg.vector_norm(images, dim=(1, 2)).double() ** 2


def observe(
    preset: Preset,
    clean: Tensor,
    sigma: Tensor,
    seed: int,
    class_name: str,
    indices: Tensor,
    backend: str | None = None,
) -> Tensor:
    """The observed images (B, H, W) float32: ``clean + sigma * noise``, normalised.

    The noise of image ``i`` is its own counter-based stream (``"noise"``) under ``seed``;
    ``sigma`` is (B, 1, 1) or (B, H, W). float32 inputs take the compiled path where it is
    available, like :func:`render_noiseless`.
    """
    if preset.normalisation not in ("minmax", "flux"):
        raise ValueError(f"unknown normalisation {preset.normalisation!r}")
    minmax = preset.normalisation == "minmax"
    b, h, w = clean.shape
    ka, kb = rng.image_keys(seed, CLASS_IDS[class_name], torch.as_tensor(indices), "noise")

    def eager() -> Tensor:
        noisy = clean
        if preset.noise != "none":
            z = rng.normals_from_keys(ka.view(-1, 1), kb.view(-1, 1), h * w, clean.dtype)
            noisy = clean + sigma * z.view(b, h, w)
        if minmax:
            lo = noisy.amin((1, 2), keepdim=True)
            hi = noisy.amax((1, 2), keepdim=True)
            noisy = (noisy - lo) / (hi - lo).clamp_min(1e-12)
        return noisy.to(torch.float32)

    if preset.noise == "none":  # nothing to draw: the same on both paths
        return eager()
    return compiled.dispatch(
        backend,
        b,
        lambda: compiled.observe(clean, sigma, ka, kb, minmax),
        eager,
        eligible=clean.dtype == torch.float32,
    )


def simulate_batch(
    preset: Preset,
    class_name: str,
    indices: np.ndarray | Tensor,
    seed: int,
    dtype: torch.dtype = torch.float32,
    substructure_chi2: bool = True,
    backend: str | None = None,
) -> tuple[Tensor, dict[str, np.ndarray]]:
    """Render the images ``indices`` of one class: (B, 1, H, W) float32 and metadata columns.

    Noise is Gaussian with the per-pixel variance of the noise model (for ``counts``: Poisson
    variance of source, lens and sky counts, plus background and read noise), drawn from the
    image's own counter-based stream. ``backend`` (``auto``/``eager``/``compiled``) chooses the
    path of float32 renders (default ``$DARKLENS_SIM_BACKEND``, else auto).
    """
    idx = torch.as_tensor(np.asarray(indices), dtype=torch.int64)
    p = draw_parameters(preset, class_name, idx, seed)
    b = idx.shape[0]
    n_max = p["sub_mask"].shape[1]
    pixels = (preset.n_pix * preset.supersample) ** 2
    chunk = max(1, _MAX_CHUNK_ELEMENTS // (max(n_max, preset.vortex_points, 1) * pixels))
    images, metas = [], []
    for start in range(0, b, chunk):
        sl = slice(start, start + chunk)
        pc = {k: v[sl] for k, v in p.items()}
        img, meta = _finish(
            preset, class_name, idx[sl], pc, seed, dtype, substructure_chi2, backend
        )
        images.append(img)
        metas.append(meta)
    if len(images) == 1:
        return images[0], metas[0]
    meta = {k: np.concatenate([m[k] for m in metas]) for k in metas[0]}
    return torch.cat(images), meta


def _finish(preset, class_name, idx, p, seed, dtype, want_chi2, backend):
    clean = render_noiseless(preset, p, substructure=True, dtype=dtype, backend=backend)
    power = _power(clean)
    sigma = _noise_sigma(preset, p, clean, power)
    out = observe(preset, clean, sigma, seed, class_name, idx, backend)
    b = clean.shape[0]
    var = sigma.double() ** 2  # (B, 1, 1) or (B, H, W)
    per_image = var.shape[1:] == (1, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        if preset.noise == "none":
            snr = torch.full((b,), float("nan"), dtype=torch.float64)
        elif per_image:
            snr = torch.sqrt(power / var.view(-1))
        else:
            snr = torch.sqrt((clean.double() ** 2 / var).sum((1, 2)))
    chi2 = torch.zeros(b, dtype=torch.float64)
    if want_chi2 and class_name != "no_sub":
        smooth = render_noiseless(preset, p, substructure=False, dtype=dtype, backend=backend)
        if preset.noise == "none":
            chi2 = torch.full((b,), float("nan"), dtype=torch.float64)
        elif per_image:
            chi2 = _power(clean.double() - smooth.double()) / var.view(-1)
        else:
            chi2 = ((clean.double() - smooth.double()) ** 2 / var).sum((1, 2))
    elif not want_chi2:
        chi2 = torch.full((b,), float("nan"), dtype=torch.float64)
    noise_sigma = torch.sqrt(var.mean((1, 2)))
    meta = _metadata(p, class_name, idx, snr, chi2, noise_sigma)
    return out.unsqueeze(1), meta


def _metadata(p, class_name, idx, snr, chi2, noise_sigma) -> dict[str, np.ndarray]:
    scalar = (
        "theta_e lens_mass lens_q lens_phi lens_center_x lens_center_y shear_gamma shear_angle "
        "lens_light_amp lens_light_r_eff lens_light_n lens_light_q source_amp source_r_eff "
        "source_n source_q source_phi source_x source_y psf_fwhm exposure_time n_subhalos "
        "subhalo_mass_total f_sub vortex_mass vortex_length vortex_angle vortex_x vortex_y "
        "log10_axion_mass"
    ).split()
    meta = {k: p[k].double().numpy() for k in scalar}
    meta["index"] = idx.numpy().astype(np.int64)
    meta["label"] = np.full(idx.shape[0], CLASS_IDS[class_name], dtype=np.int64)
    meta["snr"] = snr.numpy()
    meta["substructure_chi2"] = chi2.numpy()
    meta["noise_sigma"] = noise_sigma.numpy()
    for key, name in (
        ("sub_x", "subhalo_x"),
        ("sub_y", "subhalo_y"),
        ("sub_mass", "subhalo_mass"),
        ("sub_theta_e", "subhalo_theta_e"),
    ):
        meta[name] = p[key].double().numpy()
    return meta


def iter_class(
    preset: Preset | str,
    class_name: str,
    n: int,
    seed: int,
    start: int = 0,
    batch_size: int = 256,
    backend: str | None = None,
) -> Iterator[tuple[Tensor, dict[str, np.ndarray]]]:
    """Batches of images ``start .. start + n`` of one class."""
    preset = get_preset(preset) if isinstance(preset, str) else preset
    for lo in range(start, start + n, batch_size):
        hi = min(lo + batch_size, start + n)
        yield simulate_batch(preset, class_name, np.arange(lo, hi), seed, backend=backend)


def simulate_dataset(
    preset: Preset | str,
    n_per_class: int,
    seed: int,
    classes: tuple[str, ...] | list[str] = CLASSES,
    batch_size: int = 256,
    backend: str | None = None,
) -> LensData:
    """``n_per_class`` images of each class, in memory, with metadata and provenance.

    ``backend`` as in :func:`simulate_batch`; under ``auto`` a small job renders eager
    (:func:`darklens.simulate.compiled.backend_for_job`).
    """
    preset = get_preset(preset) if isinstance(preset, str) else preset
    backend = compiled.backend_for_job(backend, n_per_class * len(classes))
    images, labels, metas = [], [], []
    before = Counter(compiled.usage)
    for name in classes:
        for img, meta in iter_class(preset, name, n_per_class, seed, batch_size=batch_size,
                                    backend=backend):
            images.append(img.numpy())
            labels.append(meta["label"])
            metas.append(meta)
    metadata = _concat_meta(metas)
    return LensData(
        images=np.concatenate(images),
        labels=np.concatenate(labels),
        class_names=CLASSES,
        metadata=metadata,
        attrs={
            "preset": preset.to_dict(),
            "seed": seed,
            "darklens_version": __version__,
            # compiled or eager: the two agree to float rounding, not bit for bit
            "simulator_backend": compiled.paths_since(before),
        },
    )


def _concat_meta(metas: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate metadata; padded 2-D columns of different widths are NaN-padded to the widest."""
    out = {}
    for key in metas[0]:
        parts = [m[key] for m in metas]
        if parts[0].ndim == 2:
            width = max(a.shape[1] for a in parts)
            parts = [
                np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=np.nan) for a in parts
            ]
        out[key] = np.concatenate(parts)
    return out
