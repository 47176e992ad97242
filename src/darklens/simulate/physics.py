"""Pure, batched lensing physics in PyTorch.

Every function takes tensors that broadcast against each other: parameters carry a leading batch
dimension (and, for populations, a second dimension over members), positions are image-plane
angles in arcsec. Nothing here loops over images or subhalos in Python, nothing draws random
numbers, and nothing has state: the simulator composes these functions.

Conventions follow lenstronomy so that the two can be compared term by term:
- ``rotate`` turns coordinates counter-clockwise by ``-angle`` (into the frame of a profile whose
  major axis points at ``angle``, measured from +x towards +y);
- ellipse axis ratios ``q`` are minor/major, the SIE Einstein radius is the product-averaged one;
- a point mass of Einstein radius ``theta_e`` deflects by ``theta_e**2 / r``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

# Radii are floored here (arcsec) so that singular profiles stay finite on a pixel centre.
_R_FLOOR = 1e-6


def rotate(x: Tensor, y: Tensor, angle: Tensor) -> tuple[Tensor, Tensor]:
    """Coordinates in a frame rotated by ``angle`` (radians, counter-clockwise)."""
    c, s = torch.cos(angle), torch.sin(angle)
    return x * c + y * s, -x * s + y * c


def sie_deflection(
    x: Tensor,
    y: Tensor,
    theta_e: Tensor,
    q: Tensor,
    phi: Tensor,
    center_x: Tensor,
    center_y: Tensor,
) -> tuple[Tensor, Tensor]:
    """Deflection of a singular isothermal ellipsoid (SIS when ``q == 1``).

    Convergence ``kappa = theta_e / (2 sqrt(q x'^2 + y'^2 / q))`` in the frame of the major axis
    (Kormann et al. 1994; Keeton & Kochanek 1998). ``theta_e`` is the product-averaged Einstein
    radius, so a circular lens of the same ``theta_e`` has its ring there.
    """
    cx, cy, *consts = sie_constants(theta_e, q, phi, center_x, center_y)
    return sie_deflection_at(x - cx, y - cy, *consts)


def sie_constants(theta_e: Tensor, q: Tensor, phi: Tensor, center_x: Tensor,
                  center_y: Tensor) -> tuple[Tensor, ...]:
    """Per-image SIE constants: centre, cos/sin phi, q^2, e = sqrt(1 - q^2), b (see
    ``sie_deflection_at``)."""
    # sqrt(1 - q^2) is floored so that q -> 1 takes the SIS limit smoothly (atan(e a)/e -> a).
    e = torch.sqrt(torch.clamp(1.0 - q * q, min=1e-8))
    return center_x, center_y, torch.cos(phi), torch.sin(phi), q * q, e, theta_e * torch.sqrt(q) / e


def sie_deflection_at(dx: Tensor, dy: Tensor, cos_phi: Tensor, sin_phi: Tensor, q2: Tensor,
                      e: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """The SIE formula of both simulator paths (``sie_deflection``; the compiled renderer calls
    it on its per-image constants): offsets ``dx, dy`` from the centre, ``q2 = q^2``,
    ``e = sqrt(1 - q^2)`` (floored), ``b = theta_e sqrt(q) / e``.

    atanh(z) is written log1p(2z / (1 - z)) / 2: the compiler's own atanh,
    log((1 + z) / (1 - z)) / 2, loses the small values (a relative error of 1e-3 at z ~ 1e-5,
    the SIS limit of the SIE).
    """
    xr, yr = dx * cos_phi + dy * sin_phi, -dx * sin_phi + dy * cos_phi
    psi = torch.sqrt(q2 * xr * xr + yr * yr).clamp_min(_R_FLOOR)
    e_psi = e / psi  # one division for both angles
    ax_r = b * torch.atan(xr * e_psi)
    z = torch.clamp(yr * e_psi, -1 + 1e-7, 1 - 1e-7)
    ay_r = b * (0.5 * torch.log1p(2.0 * z / (1.0 - z)))
    return ax_r * cos_phi - ay_r * sin_phi, ax_r * sin_phi + ay_r * cos_phi


def shear_deflection(x: Tensor, y: Tensor, gamma1: Tensor, gamma2: Tensor) -> tuple[Tensor, Tensor]:
    """Deflection of an external shear about the origin: alpha = Gamma . (x, y)."""
    return gamma1 * x + gamma2 * y, gamma2 * x - gamma1 * y


def shear_components(gamma: Tensor, angle: Tensor) -> tuple[Tensor, Tensor]:
    """Cartesian shear (gamma1, gamma2) from magnitude and position angle (radians)."""
    return gamma * torch.cos(2 * angle), gamma * torch.sin(2 * angle)


def point_mass_deflection(
    x: Tensor, y: Tensor, theta_e: Tensor, center_x: Tensor, center_y: Tensor
) -> tuple[Tensor, Tensor]:
    """Deflection of a point mass: ``theta_e**2 / r`` pointing away from the mass."""
    cx, cy, theta_e2 = point_mass_constants(theta_e, center_x, center_y)
    return point_mass_at(x - cx, y - cy, theta_e2)


def point_mass_constants(theta_e: Tensor, center_x: Tensor,
                         center_y: Tensor) -> tuple[Tensor, ...]:
    """Per-mass constants: position and theta_e^2 (see ``point_mass_at``)."""
    return center_x, center_y, theta_e * theta_e


def point_mass_at(dx: Tensor, dy: Tensor, theta_e2: Tensor) -> tuple[Tensor, Tensor]:
    """The point-mass formula of both simulator paths: offsets ``dx, dy`` from the mass,
    ``theta_e2 = theta_e^2`` (0 for padding)."""
    w = theta_e2 / (dx * dx + dy * dy).clamp_min(_R_FLOOR**2)
    return dx * w, dy * w


def point_masses_deflection(
    x: Tensor, y: Tensor, theta_e: Tensor, center_x: Tensor, center_y: Tensor
) -> tuple[Tensor, Tensor]:
    """Summed deflection (B, P) of S point masses per image: parameters (B, S), positions (1, P).

    Padding entries with ``theta_e == 0`` contribute nothing. Images are processed in small
    groups so that the (group, S, P) intermediates stay in the CPU cache, which is about ten
    times faster than one pass over the whole batch.
    """
    b, s = theta_e.shape
    p = x.shape[-1]
    group = max(1, (1 << 19) // max(s * p, 1))
    xs, ys = x.reshape(1, 1, p), y.reshape(1, 1, p)
    out_x = x.new_empty((b, p))
    out_y = x.new_empty((b, p))
    for lo in range(0, b, group):
        sl = slice(lo, lo + group)
        ax, ay = point_mass_at(xs - center_x[sl].unsqueeze(-1), ys - center_y[sl].unsqueeze(-1),
                               (theta_e[sl] * theta_e[sl]).unsqueeze(-1))
        out_x[sl] = ax.sum(1)
        out_y[sl] = ay.sum(1)
    return out_x, out_y


def _nfw_f(x: Tensor) -> Tensor:
    """The NFW projection function F(x) (Bartelmann 1996), continuous through x = 1."""
    one = torch.ones_like(x)
    inside = x < 1.0
    t_in = torch.sqrt(torch.clamp(1.0 - x * x, min=1e-12))
    t_out = torch.sqrt(torch.clamp(x * x - 1.0, min=1e-12))
    f_in = torch.atanh(torch.clamp(t_in, max=1 - 1e-12)) / t_in
    f_out = torch.atan(t_out) / t_out
    f = torch.where(inside, f_in, f_out)
    return torch.where((x - 1.0).abs() < 1e-6, one, f)


def tnfw_deflection(
    x: Tensor,
    y: Tensor,
    rs: Tensor,
    alpha_rs: Tensor,
    r_trunc: Tensor,
    center_x: Tensor,
    center_y: Tensor,
) -> tuple[Tensor, Tensor]:
    """Deflection of a truncated NFW halo (Baltz, Marshall & Oguri 2009, n = 1 truncation).

    ``rs`` is the scale radius, ``alpha_rs`` the deflection an untruncated NFW would have at
    ``rs``, ``r_trunc`` the truncation radius (all arcsec), as in lenstronomy's ``TNFW``.
    """
    return tnfw_at(x - center_x, y - center_y, rs, alpha_rs, r_trunc)


def tnfw_constants(rs: Tensor, alpha_rs: Tensor, r_trunc: Tensor, center_x: Tensor,
                   center_y: Tensor) -> tuple[Tensor, ...]:
    """Per-halo constants: position, then ``rs, alpha_rs, r_trunc`` as drawn (see ``tnfw_at``)."""
    return center_x, center_y, rs, alpha_rs, r_trunc


def tnfw_at(dx: Tensor, dy: Tensor, rs: Tensor, alpha_rs: Tensor,
            r_trunc: Tensor) -> tuple[Tensor, Tensor]:
    """The truncated-NFW formula of both simulator paths, at offsets ``dx, dy`` from the halo."""
    r = torch.sqrt(dx * dx + dy * dy)
    r = torch.maximum(r, 1e-3 * rs)
    xs = torch.clamp(r / rs, min=1e-3)
    tau = r_trunc / rs
    t2 = tau * tau
    big_l = torch.log(xs / (tau + torch.sqrt(t2 + xs * xs)))
    g = (
        t2
        / (t2 + 1) ** 2
        * (
            (t2 + 1 + 2 * (xs * xs - 1)) * _nfw_f(xs)
            + tau * math.pi
            + (t2 - 1) * torch.log(tau)
            + torch.sqrt(t2 + xs * xs) * (-math.pi + big_l * (t2 - 1) / tau)
        )
    )
    rho0_rs = alpha_rs / (4.0 * rs * (1.0 + math.log(0.5)))
    scale = 4.0 * rho0_rs * g / (xs * xs)
    return scale * dx, scale * dy


def line_mass_deflection(
    x: Tensor,
    y: Tensor,
    theta_e: Tensor,
    length: Tensor,
    angle: Tensor,
    center_x: Tensor,
    center_y: Tensor,
) -> tuple[Tensor, Tensor]:
    """Deflection of a finite, uniform, infinitely thin line mass (a superfluid vortex).

    The segment has total mass equal to that of a point mass of Einstein radius ``theta_e``,
    length ``length``, direction ``angle`` and midpoint ``(center_x, center_y)``. Integrating
    the point-mass deflection along the segment with density L = theta_e**2 / length gives, in
    coordinates u along the segment (from its start) and v across it,

        alpha_u = (L / 2) ln[(u^2 + v^2) / ((u - l)^2 + v^2)]
        alpha_v = L [atan(u / v) - atan((u - l) / v)] = L atan2(l v, v^2 + u (u - l)).

    (With a dimensionless line density lambda, alpha = (1/pi) int kappa ..., L = lambda / pi,
    which gives the 1/(2 pi) and 1/pi factors often quoted.)
    """
    sx, sy, *consts = line_mass_constants(theta_e, length, angle, center_x, center_y)
    return line_mass_at(x - sx, y - sy, *consts)


def line_mass_constants(theta_e: Tensor, length: Tensor, angle: Tensor, center_x: Tensor,
                        center_y: Tensor) -> tuple[Tensor, ...]:
    """Per-segment constants: its start, cos/sin of its direction, its length and density
    ``theta_e^2 / length`` (see ``line_mass_at``)."""
    c, s = torch.cos(angle), torch.sin(angle)
    return (center_x - 0.5 * length * c, center_y - 0.5 * length * s, c, s, length,
            theta_e * theta_e / length)


def line_mass_at(dx: Tensor, dy: Tensor, cos_a: Tensor, sin_a: Tensor, length: Tensor,
                 lam: Tensor) -> tuple[Tensor, Tensor]:
    """The line-mass formula of both simulator paths: offsets ``dx, dy`` from the segment's
    start, its direction's cosine and sine, its length and density ``lam = theta_e^2 / length``."""
    u = dx * cos_a + dy * sin_a
    v = -dx * sin_a + dy * cos_a
    floor = _R_FLOOR**2
    r0 = (u * u + v * v).clamp_min(floor)
    r1 = ((u - length) * (u - length) + v * v).clamp_min(floor)
    a_u = 0.5 * lam * torch.log(r0 / r1)
    a_v = lam * torch.atan2(length * v, v * v + u * (u - length))
    return a_u * cos_a - a_v * sin_a, a_u * sin_a + a_v * cos_a


@dataclass(frozen=True)
class MassProfile:
    """One mass profile as both simulator paths run it (docs/architecture.md).

    ``deflection(x, y, *params)``: the eager form on drawn parameters; ``constants(*params)``:
    the per-image constants the compiled renderer tabulates, reference point first;
    ``at(dx, dy, *constants[2:])``: the formula the compiled graph runs at offsets from that
    point. ``params``: each parameter's name and a plausible range (arcsec, radians), for tests.
    """

    deflection: Callable[..., tuple[Tensor, Tensor]]
    constants: Callable[..., tuple[Tensor, ...]]
    at: Callable[..., tuple[Tensor, Tensor]]
    params: tuple[tuple[str, float, float], ...]


_CENTRE = (("center_x", -1.0, 1.0), ("center_y", -1.0, 1.0))
#: Every mass profile, by name. A new one: its ``*_at`` formula and ``*_constants`` here, one
#: line below, then its slot in the eager ``render._deflection`` and the compiled
#: ``compiled._surface_brightness`` (``tests/simulate/test_profiles.py`` checks them all).
MASS_PROFILES: dict[str, MassProfile] = {
    "sie": MassProfile(sie_deflection, sie_constants, sie_deflection_at,
                       (("theta_e", 0.5, 2.0), ("q", 0.3, 1.0), ("phi", 0.0, math.pi), *_CENTRE)),
    "point": MassProfile(point_mass_deflection, point_mass_constants, point_mass_at,
                         (("theta_e", 0.01, 0.3), *_CENTRE)),
    "tnfw": MassProfile(tnfw_deflection, tnfw_constants, tnfw_at,
                        (("rs", 0.05, 0.5), ("alpha_rs", 0.001, 0.05), ("r_trunc", 0.5, 5.0),
                         *_CENTRE)),
    "line": MassProfile(line_mass_deflection, line_mass_constants, line_mass_at,
                        (("theta_e", 0.05, 0.5), ("length", 0.3, 2.0), ("angle", 0.0, math.pi),
                         *_CENTRE)),
}


def sersic_b(n: Tensor) -> Tensor:
    """Sersic b_n such that R_eff encloses half the light (lenstronomy's linear approximation,
    within 0.1% of the exact root for 0.5 <= n <= 8)."""
    return torch.clamp(1.9992 * n - 0.3271, min=1e-5)


def sersic_profile(
    x: Tensor,
    y: Tensor,
    amp: Tensor,
    r_eff: Tensor,
    n: Tensor,
    q: Tensor,
    phi: Tensor,
    center_x: Tensor,
    center_y: Tensor,
) -> Tensor:
    """Elliptical Sersic surface brightness, ``amp`` at the half-light radius ``r_eff``.

    The elliptical radius is ``sqrt(q x'^2 + y'^2 / q)`` (product-averaged convention, as in
    lenstronomy's SERSIC_ELLIPSE), so the total flux does not depend on ``q``.
    """
    xr, yr = rotate(x - center_x, y - center_y, phi)
    r = torch.sqrt(q * xr * xr + yr * yr / q).clamp_min(1e-4)
    b = sersic_b(n)
    return amp * torch.exp(-b * ((r / r_eff.clamp_min(1e-4)) ** (1.0 / n) - 1.0))


def sersic_total_flux(amp: Tensor, r_eff: Tensor, n: Tensor) -> Tensor:
    """Total flux of a Sersic profile: 2 pi n R^2 amp e^b b^(-2n) Gamma(2n)."""
    b = sersic_b(n)
    log_gamma = torch.lgamma(2 * n)
    return 2 * math.pi * n * r_eff**2 * amp * torch.exp(b + log_gamma - 2 * n * torch.log(b))


def gaussian_kernel_1d(sigma_pix: Tensor, radius: int, dtype: torch.dtype) -> Tensor:
    """Normalised 1-D Gaussian taps (B, 2 radius + 1) for per-image widths in pixels."""
    t = torch.arange(-radius, radius + 1, dtype=dtype)
    k = torch.exp(-0.5 * (t / sigma_pix.to(dtype).unsqueeze(-1).clamp_min(1e-6)) ** 2)
    return k / k.sum(-1, keepdim=True)


def banded_matrix(kernel: Tensor, size: int) -> Tensor:
    """Matrices (B, size, size) that apply a 1-D kernel along one axis with zero padding.

    A separable PSF then costs two batched matrix products, much faster on a CPU than a
    one-channel conv2d with a large kernel.
    """
    radius = (kernel.shape[-1] - 1) // 2
    idx = torch.arange(size)
    offset = idx.view(1, -1) - idx.view(-1, 1) + radius  # column - row + radius
    valid = (offset >= 0) & (offset <= 2 * radius)
    gathered = kernel[:, offset.clamp(0, 2 * radius)]
    return gathered * valid.to(kernel.dtype)


def convolve_separable(images: Tensor, kernel_y: Tensor, kernel_x: Tensor) -> Tensor:
    """Convolve (B, H, W) images with per-image separable kernels (B, k), zero padding."""
    _, h, w = images.shape
    my = banded_matrix(kernel_y, h)  # (B, H, H)
    mx = banded_matrix(kernel_x, w)  # (B, W, W)
    return my @ images @ mx.transpose(-1, -2)


def convolve_kernel(images: Tensor, kernel: Tensor) -> Tensor:
    """Convolve (B, H, W) images with one 2-D kernel (kh, kw), odd sizes, zero padding."""
    kh, kw = kernel.shape
    weight = kernel.flip(0, 1).to(images.dtype).view(1, 1, kh, kw)
    out = torch.nn.functional.conv2d(images.unsqueeze(1), weight, padding=(kh // 2, kw // 2))
    return out.squeeze(1)


def fwhm_to_sigma(fwhm: Tensor | float) -> Tensor | float:
    """Gaussian sigma from full width at half maximum."""
    return fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0)))


def pixel_grid(
    n_pix: int, pixel_scale: float, supersample: int = 1, dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor]:
    """Image-plane coordinates (1, H*s, W*s) of (sub)pixel centres, origin at the image centre.

    Row i, column j of the returned (H*s, W*s) layout is at x = column offset, y = row offset;
    x grows with the column index and y with the row index.
    """
    m = n_pix * supersample
    step = pixel_scale / supersample
    coords = (torch.arange(m, dtype=torch.float64) - (m - 1) / 2.0) * step
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    return xx.reshape(1, -1).to(dtype), yy.reshape(1, -1).to(dtype)


def downsample(images: Tensor, factor: int) -> Tensor:
    """Average (B, H*f, W*f) supersampled images down to (B, H, W)."""
    if factor == 1:
        return images
    b, hs, ws = images.shape
    return images.view(b, hs // factor, factor, ws // factor, factor).mean(dim=(2, 4))
