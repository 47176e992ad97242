"""Masses in solar masses to lensing angles, in flat LambdaCDM (astropy).

Two distance conventions: ``"angular"`` (physically right: angular-diameter distances, with
D_ls from z_l to z_s) and ``"deeplense-luminosity"`` (what the public DeepLenseSim code does:
luminosity distances with D_ls = D_s - D_l; it makes Einstein radii about 23% smaller at
z_l = 0.5, z_s = 1). Presets that mirror the public data use the second, and say so.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from astropy import constants as const
from astropy import units as u
from astropy.cosmology import FlatLambdaCDM

ARCSEC_PER_RAD = 180.0 * 3600.0 / math.pi


@functools.lru_cache(maxsize=32)
def _cosmology(h0: float, om0: float, ob0: float) -> FlatLambdaCDM:
    return FlatLambdaCDM(H0=h0, Om0=om0, Ob0=ob0)


@functools.lru_cache(maxsize=256)
def distances_m(
    z_lens: float,
    z_source: float,
    convention: str = "angular",
    h0: float = 70.0,
    om0: float = 0.3,
    ob0: float = 0.05,
) -> tuple[float, float, float]:
    """(D_l, D_s, D_ls) in metres for the chosen convention."""
    if not 0 < z_lens < z_source:
        raise ValueError(f"need 0 < z_lens < z_source, got {z_lens}, {z_source}")
    cosmo = _cosmology(h0, om0, ob0)
    if convention == "angular":
        d_l = cosmo.angular_diameter_distance(z_lens)
        d_s = cosmo.angular_diameter_distance(z_source)
        d_ls = cosmo.angular_diameter_distance(z_lens, z_source)
    elif convention == "deeplense-luminosity":
        d_l = cosmo.luminosity_distance(z_lens)
        d_s = cosmo.luminosity_distance(z_source)
        d_ls = d_s - d_l
    else:
        raise ValueError(f"unknown distance convention {convention!r}")
    return tuple(float(d.to(u.m).value) for d in (d_l, d_s, d_ls))  # type: ignore[return-value]


def einstein_radius_point_mass(
    mass_msun: np.ndarray | float, z_lens: float, z_source: float, convention: str = "angular"
) -> np.ndarray:
    """Einstein radius (arcsec) of a point mass: sqrt(4 G M / c^2 * D_ls / (D_l D_s))."""
    d_l, d_s, d_ls = distances_m(z_lens, z_source, convention)
    k = 4 * const.G.value * const.M_sun.value / const.c.value**2 * d_ls / (d_l * d_s)
    return np.sqrt(k * np.asarray(mass_msun, dtype=np.float64)) * ARCSEC_PER_RAD


def mass_from_einstein_radius(
    theta_e_arcsec: np.ndarray | float, z_lens: float, z_source: float, convention: str = "angular"
) -> np.ndarray:
    """Inverse of :func:`einstein_radius_point_mass`: the mass (M_sun) of a given theta_E."""
    unit = einstein_radius_point_mass(1.0, z_lens, z_source, convention)
    return (np.asarray(theta_e_arcsec, dtype=np.float64) / unit) ** 2


def nfw_angles(
    mass_msun: np.ndarray,
    concentration: np.ndarray,
    z_lens: float,
    z_source: float,
    convention: str = "angular",
) -> tuple[np.ndarray, np.ndarray]:
    """NFW scale radius and deflection at the scale radius (both arcsec) from M200 and c200.

    Same parametrisation as lenstronomy's ``LensCosmo.nfw_physical2angle``.
    """
    cosmo = _cosmology(70.0, 0.3, 0.05)
    d_l, d_s, d_ls = distances_m(z_lens, z_source, convention)
    rho_crit = cosmo.critical_density(z_lens).to(u.kg / u.m**3).value
    m = np.asarray(mass_msun, dtype=np.float64) * const.M_sun.value
    c = np.asarray(concentration, dtype=np.float64)
    r200 = (3 * m / (4 * math.pi * 200 * rho_crit)) ** (1 / 3)
    rs = r200 / c
    rho0 = 200 / 3 * rho_crit * c**3 / (np.log(1 + c) - c / (1 + c))
    sigma_crit = const.c.value**2 / (4 * math.pi * const.G.value) * d_s / (d_l * d_ls)
    alpha_rs = 4 * rho0 * rs**2 * (1 + math.log(0.5)) / sigma_crit
    return rs / d_l * ARCSEC_PER_RAD, alpha_rs / d_l * ARCSEC_PER_RAD


def axion_half_length(axion_mass_ev: np.ndarray | float) -> np.ndarray:
    """DeepLense's vortex half-length (arcsec) for an axion mass: 0.06 x 1e-22 eV / (2 m)."""
    return 0.06 * 1e-22 / (2.0 * np.asarray(axion_mass_ev, dtype=np.float64))
