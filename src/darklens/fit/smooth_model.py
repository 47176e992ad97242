"""The smooth lens the fitter inverts: SIE + external shear + Sersic source (+ Sersic lens light).

The non-linear parameters live in an unconstrained vector ``u`` (B, K); each maps to its
physical range through a sigmoid (``lo + (hi - lo) sigmoid(u)``, in log space for sizes), so
any optimiser step stays physical. Ellipticities are components ``(e1, e2)`` (axis ratio
``q = (1 - |e|) / (1 + |e|)``, angle ``atan2(e2, e1) / 2``), which have no wrap-around.
Amplitudes (source, lens light) and a constant background are linear and are solved exactly at
every step (:func:`solve_linear`), so they never appear in ``u``.

Rendering reuses the simulator's physics functions (:mod:`darklens.simulate.physics`), so a
fit to the simulator's own images can reach the noise exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from darklens.fit.instrument import Instrument
from darklens.simulate import physics

E_MAX = 0.5  # |e1|, |e2| bound: q >= 0.17


@dataclass(frozen=True)
class ParamSpec:
    """One non-linear parameter: name, physical bounds, log scale or not."""

    name: str
    lo: float
    hi: float
    log: bool = False


def parameter_specs(inst: Instrument) -> list[ParamSpec]:
    """The fitted parameters for an instrument, in the order of ``u``'s columns."""
    fov, pix = inst.field_of_view, inst.pixel_scale
    specs = [
        ParamSpec("theta_e", 2 * pix, 0.45 * fov),
        ParamSpec("lens_x", -0.2 * fov, 0.2 * fov),
        ParamSpec("lens_y", -0.2 * fov, 0.2 * fov),
        ParamSpec("lens_e1", -E_MAX, E_MAX),
        ParamSpec("lens_e2", -E_MAX, E_MAX),
        ParamSpec("gamma1", -0.4, 0.4),
        ParamSpec("gamma2", -0.4, 0.4),
        ParamSpec("source_x", -0.25 * fov, 0.25 * fov),
        ParamSpec("source_y", -0.25 * fov, 0.25 * fov),
        ParamSpec("source_r_eff", 0.3 * pix, 0.3 * fov, log=True),
        ParamSpec("source_n", 0.5, 5.0),
        ParamSpec("source_e1", -E_MAX, E_MAX),
        ParamSpec("source_e2", -E_MAX, E_MAX),
    ]
    if inst.lens_light:
        specs += [
            ParamSpec("light_r_eff", 0.5 * pix, 0.5 * fov, log=True),
            ParamSpec("light_n", 0.5, 6.0),
            ParamSpec("light_e1", -E_MAX, E_MAX),
            ParamSpec("light_e2", -E_MAX, E_MAX),
        ]
    if inst.psf_fwhm is None:
        specs.append(ParamSpec("psf_fwhm", 0.3 * pix, 5.0 * pix))
    return specs


def to_physical(u: Tensor, specs: list[ParamSpec]) -> dict[str, Tensor]:
    """Physical parameters (each (B,)) from the unconstrained vector ``u`` (B, K)."""
    out = {}
    for k, s in enumerate(specs):
        t = torch.sigmoid(u[:, k])
        if s.log:
            lo, hi = math.log(s.lo), math.log(s.hi)
            out[s.name] = torch.exp(lo + (hi - lo) * t)
        else:
            out[s.name] = s.lo + (s.hi - s.lo) * t
    return out


def to_unconstrained(phys: dict[str, Tensor], specs: list[ParamSpec]) -> Tensor:
    """Inverse of :func:`to_physical`; values are clipped just inside their bounds."""
    cols = []
    for s in specs:
        v = phys[s.name].double()
        if s.log:
            t = (torch.log(v.clamp_min(1e-12)) - math.log(s.lo)) / (math.log(s.hi) - math.log(s.lo))
        else:
            t = (v - s.lo) / (s.hi - s.lo)
        t = t.clamp(1e-4, 1 - 1e-4)
        cols.append(torch.log(t / (1 - t)))
    return torch.stack(cols, 1).float()


def axis_ratio_angle(e1: Tensor, e2: Tensor) -> tuple[Tensor, Tensor]:
    """(q, phi) from ellipticity components (minor/major axis ratio, radians)."""
    e = torch.sqrt(e1 * e1 + e2 * e2 + 1e-10)
    return (1 - e) / (1 + e), 0.5 * torch.atan2(e2, e1)


def psf_radius(inst: Instrument) -> int:
    """Half-width in pixels of the PSF taps: 4 sigma of the widest PSF allowed."""
    widest = inst.psf_fwhm if inst.psf_fwhm is not None else 5.0 * inst.pixel_scale
    sigma_pix = float(physics.fwhm_to_sigma(widest)) / inst.pixel_scale
    return max(1, min(int(math.ceil(4 * sigma_pix)), inst.n_pix // 2))


class SmoothRenderer:
    """Renders the unit-amplitude light components of the smooth model for a batch of ``u``.

    ``components(u)`` returns (B, C, P) with C = 1 (source) or 2 (source, lens light), P the
    number of pixels, PSF applied; the full model is ``amplitudes . components + background``.
    """

    def __init__(self, inst: Instrument, dtype: torch.dtype = torch.float32):
        self.inst = inst
        self.specs = parameter_specs(inst)
        self.dtype = dtype
        self.x, self.y = physics.pixel_grid(inst.n_pix, inst.pixel_scale, inst.supersample, dtype)
        self.radius = psf_radius(inst)

    @property
    def n_params(self) -> int:
        return len(self.specs)

    @property
    def n_components(self) -> int:
        return 2 if self.inst.lens_light else 1

    def source_plane(self, u: Tensor) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """Physical parameters and the source-plane position (each (B, P_sub)) of every
        (sub)pixel: where the smooth lens maps it."""
        p = to_physical(u, self.specs)
        x, y = self.x, self.y

        def col(name: str) -> Tensor:
            return p[name].view(-1, 1)

        lq, lphi = axis_ratio_angle(col("lens_e1"), col("lens_e2"))
        ax, ay = physics.sie_deflection(x, y, col("theta_e"), lq, lphi, col("lens_x"),
                                        col("lens_y"))
        sx, sy = physics.shear_deflection(x - col("lens_x"), y - col("lens_y"), col("gamma1"),
                                          col("gamma2"))
        return p, x - ax - sx, y - ay - sy

    def source_light(self, p: dict[str, Tensor], bx: Tensor, by: Tensor) -> Tensor:
        """Unit-amplitude source surface brightness at source-plane positions (B, P_sub)."""
        sq, sphi = axis_ratio_angle(p["source_e1"].view(-1, 1), p["source_e2"].view(-1, 1))
        return physics.sersic_profile(bx, by, torch.ones_like(bx[:, :1]),
                                      p["source_r_eff"].view(-1, 1), p["source_n"].view(-1, 1),
                                      sq, sphi, p["source_x"].view(-1, 1),
                                      p["source_y"].view(-1, 1))

    def components(self, u: Tensor) -> Tensor:
        """Unit-amplitude images (B, C, P) of the source (and lens light), PSF applied."""
        p, bx, by = self.source_plane(u)
        images = [self.source_light(p, bx, by)]
        if self.inst.lens_light:
            gq, gphi = axis_ratio_angle(p["light_e1"].view(-1, 1), p["light_e2"].view(-1, 1))
            one = torch.ones_like(bx[:, :1])
            images.append(physics.sersic_profile(
                self.x, self.y, one, p["light_r_eff"].view(-1, 1), p["light_n"].view(-1, 1),
                gq, gphi, p["lens_x"].view(-1, 1), p["lens_y"].view(-1, 1)))
        return self.observe(torch.stack(images, 1), p)

    def observe(self, sub_images: Tensor, p: dict[str, Tensor]) -> Tensor:
        """(B, C, P_sub) surface brightness at the (sub)pixels -> (B, C, P) pixel images:
        averaged over each pixel's samples, then the PSF of each image."""
        inst = self.inst
        b, c = sub_images.shape[:2]
        m = inst.n_pix * inst.supersample
        img = physics.downsample(sub_images.reshape(b * c, m, m), inst.supersample)
        fwhm = p["psf_fwhm"] if inst.psf_fwhm is None else None
        if fwhm is not None or inst.psf_fwhm:
            if fwhm is None:
                fwhm = torch.full((b,), float(inst.psf_fwhm), dtype=sub_images.dtype)
            sigma = physics.fwhm_to_sigma(fwhm) / inst.pixel_scale
            taps = physics.gaussian_kernel_1d(sigma, self.radius, self.dtype)
            taps = taps.repeat_interleave(c, 0)
            img = physics.convolve_separable(img, taps, taps)
        return img.reshape(b, c, inst.n_pix * inst.n_pix)


def solve_linear(components: Tensor, data: Tensor, weights: Tensor,
                 ridge: float = 1e-6) -> tuple[Tensor, Tensor]:
    """Weighted least-squares amplitudes of the components plus a constant background.

    components (B, C, P), data and weights (B, P). Returns (coefficients (B, C + 1), model
    (B, P)); the last coefficient is the background. Differentiable, so a fit that solves the
    linear part at every step sees the exact (variable-projection) gradient.
    """
    design = torch.cat([components, torch.ones_like(components[:, :1])], 1)  # (B, C+1, P)
    wd = design * weights.unsqueeze(1)
    gram = wd @ design.transpose(1, 2)
    scale = torch.diagonal(gram, dim1=1, dim2=2).mean(-1, keepdim=True).unsqueeze(-1)
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype)
    rhs = (wd @ data.unsqueeze(-1))
    coef = torch.linalg.solve(gram + ridge * scale * eye, rhs).squeeze(-1)
    return coef, (coef.unsqueeze(1) @ design).squeeze(1)
