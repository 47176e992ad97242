"""Drawing every parameter of a simulated image from its preset (the simulator's first step).

Image ``i`` of class ``c`` under seed ``s`` gets its parameters from its own counter-based
stream (:mod:`darklens.simulate.rng`, slot by slot, ``_SLOTS``), so they are the same whatever
batch draws them. Then :mod:`darklens.simulate.render` renders them and
:mod:`darklens.simulate.observation` adds the noise.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from darklens.data.lensdata import CLASSES
from darklens.simulate import cosmology, physics
from darklens.simulate.presets import Preset
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
