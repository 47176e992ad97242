"""The smooth lens the fitter inverts: SIE + external shear + Sersic source (+ Sersic lens light).

The non-linear parameters live in an unconstrained vector ``u`` (B, K); each maps to its
physical range through a sigmoid (``lo + (hi - lo) sigmoid(u)``, in log space for sizes), so
any optimiser step stays physical. Ellipticities are components ``(e1, e2)`` (axis ratio
``q = (1 - |e|) / (1 + |e|)``, angle ``atan2(e2, e1) / 2``), which have no wrap-around.
Amplitudes (source, lens light) and a constant background are linear and are solved exactly at
every step (:func:`solve_linear`), so they never appear in ``u``.

Rendering reuses the simulator's physics functions (:mod:`darklens.simulate.physics`), so a
fit to the simulator's own images can reach the noise exactly. Where the simulator's compiled
path is available (:mod:`darklens.simulate.compiled`, chosen by ``DARKLENS_SIM_BACKEND`` as for
the simulator), ``components`` renders through its fused graph instead: the same physics as
one loop over the pixels, 5-9x faster on one core than eager at 64x64 (the fitter renders each
image about a thousand times); values agree with eager to float rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from darklens.fit.instrument import Instrument
from darklens.simulate import compiled, physics
from darklens.simulate.backend import dispatch

E_MAX = 0.5  # |e1|, |e2| bound: q >= 0.17
RIDGE = 1e-6  # relative ridge of the linear solve (amplitudes and background)


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

    def __init__(self, inst: Instrument, dtype: torch.dtype = torch.float32,
                 backend: str | None = None):
        self.inst = inst
        self.backend = backend  # None: DARKLENS_SIM_BACKEND, else auto
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

    def components(self, u: Tensor, parts: tuple[int, ...] | None = None) -> Tensor:
        """Unit-amplitude images (B, C, P) of the source (and lens light), PSF applied; with
        ``parts``, only those components (B, len(parts), P), in that order."""
        parts = tuple(range(self.n_components)) if parts is None else parts
        b = u.shape[0]
        which = torch.tensor(parts, dtype=torch.int64).repeat_interleave(b)
        rows = self.render_rows(u.repeat(len(parts), 1), which)  # (C * B, P), part-major
        return rows.view(len(parts), b, -1).transpose(0, 1)

    def render_rows(self, u: Tensor, part: Tensor) -> Tensor:
        """Row ``i`` (N, P) is component ``part[i]`` (0 source, 1 lens light) of ``u[i]``.

        Any mix of components and parameter sets renders in one call: through the compiled
        graph (where available and nothing needs a gradient) that is one fused loop, so the
        fitter's Jacobian (the base model and every shifted parameter, both components) costs
        one call's overhead instead of one per component. Each row's pixels do not depend on
        the other rows (see :mod:`darklens.simulate.compiled`).
        """
        eligible = self.dtype == torch.float32 and not (torch.is_grad_enabled() and
                                                        u.requires_grad)
        return dispatch(self.backend, u.shape[0], lambda: self._compiled(u, part),
                        lambda: self._eager_rows(u, part), eligible=eligible)

    def dependencies(self) -> list[list[int]]:
        """For each component, the columns of ``u`` it depends on: the lens light does not
        move with the mass model or the source, the source not with the light's shape, so a
        finite-difference Jacobian re-renders only what a step changes."""
        names = [s.name for s in self.specs]
        light = {"lens_x", "lens_y", "psf_fwhm"}
        source = [i for i, n in enumerate(names) if not n.startswith("light_")]
        if not self.inst.lens_light:
            return [source]
        return [source, [i for i, n in enumerate(names) if n.startswith("light_") or n in light]]

    def _psf_taps(self, p: dict[str, Tensor], b: int) -> Tensor | None:
        """Per-image PSF taps (B, 2R+1), or None without a PSF."""
        inst = self.inst
        fwhm = p["psf_fwhm"] if inst.psf_fwhm is None else None
        if fwhm is None and not inst.psf_fwhm:
            return None
        if fwhm is None:
            fwhm = torch.full((b,), float(inst.psf_fwhm), dtype=self.dtype)
        sigma = physics.fwhm_to_sigma(fwhm) / inst.pixel_scale
        return physics.gaussian_kernel_1d(sigma, self.radius, self.dtype)

    def _compiled(self, u: Tensor, part: Tensor) -> Tensor:
        """:meth:`render_rows` through :func:`darklens.simulate.compiled.render`: every row
        in one fused loop (a lens-light row has no deflection: its lens constants have b = 0)."""
        inst = self.inst
        p = to_physical(u, self.specs)
        n, m = u.shape[0], inst.n_pix * inst.supersample
        lq, lphi = axis_ratio_angle(p["lens_e1"], p["lens_e2"])
        e = torch.sqrt(torch.clamp(1.0 - lq * lq, min=1e-8))
        lens = torch.stack([p["lens_x"], p["lens_y"], torch.cos(lphi), torch.sin(lphi), lq * lq,
                            e, p["theta_e"] * torch.sqrt(lq) / e, p["gamma1"], p["gamma2"]], 1)
        one = torch.ones_like(lq)
        sq, sphi = axis_ratio_angle(p["source_e1"], p["source_e2"])
        light = compiled.sersic_columns(one, p["source_r_eff"], p["source_n"], sq, sphi,
                                        p["source_x"], p["source_y"])
        if inst.lens_light and bool((part == 1).any()):
            is_light = (part == 1).view(-1, 1)
            gq, gphi = axis_ratio_angle(p["light_e1"], p["light_e2"])
            no_lens = torch.zeros_like(lens)
            no_lens[:, 2], no_lens[:, 4], no_lens[:, 5] = 1.0, 1.0, 1.0  # b = 0: no deflection
            lens = torch.where(is_light, no_lens, lens)
            light = torch.where(is_light, compiled.sersic_columns(
                one, p["light_r_eff"], p["light_n"], gq, gphi, p["lens_x"], p["lens_y"]), light)
        taps = self._psf_taps(p, n)
        x, y = self.x.view(1, m, m), self.y.view(1, m, m)
        area = inst.pixel_scale ** 2  # compiled.render returns flux per pixel: undo it
        images = compiled.render(x, y, lens, light, None, None, None, None, taps,
                                 n_pix=inst.n_pix, factor=inst.supersample,
                                 pixel_scale=inst.pixel_scale) / area
        return images.reshape(n, inst.n_pix * inst.n_pix)

    def _eager_rows(self, u: Tensor, part: Tensor) -> Tensor:
        """:meth:`render_rows` in eager PyTorch: the rows of each component together."""
        out = u.new_empty((u.shape[0], self.inst.n_pix * self.inst.n_pix))
        for c in torch.unique(part).tolist():
            rows = torch.nonzero(part == c).squeeze(-1)
            out[rows] = self._eager(u[rows], (int(c),))[:, 0]
        return out

    def _eager(self, u: Tensor, parts: tuple[int, ...]) -> Tensor:
        """Eager PyTorch rendering (differentiable; any dtype) of the components ``parts``."""
        p, bx, by = self.source_plane(u)
        images = {}
        if 0 in parts:
            images[0] = self.source_light(p, bx, by)
        if 1 in parts:
            gq, gphi = axis_ratio_angle(p["light_e1"].view(-1, 1), p["light_e2"].view(-1, 1))
            one = torch.ones_like(bx[:, :1])
            images[1] = physics.sersic_profile(
                self.x, self.y, one, p["light_r_eff"].view(-1, 1), p["light_n"].view(-1, 1),
                gq, gphi, p["lens_x"].view(-1, 1), p["lens_y"].view(-1, 1))
        return self.observe(torch.stack([images[i] for i in parts], 1), p)

    def observe(self, sub_images: Tensor, p: dict[str, Tensor]) -> Tensor:
        """(B, C, P_sub) surface brightness at the (sub)pixels -> (B, C, P) pixel images:
        averaged over each pixel's samples, then the PSF of each image."""
        inst = self.inst
        b, c = sub_images.shape[:2]
        m = inst.n_pix * inst.supersample
        img = physics.downsample(sub_images.reshape(b * c, m, m), inst.supersample)
        taps = self._psf_taps(p, b)
        if taps is not None:
            taps = taps.repeat_interleave(c, 0)
            img = physics.convolve_separable(img, taps, taps)
        return img.reshape(b, c, inst.n_pix * inst.n_pix)


def solve_linear(components: Tensor, data: Tensor, weights: Tensor,
                 ridge: float = RIDGE) -> tuple[Tensor, Tensor]:
    """Weighted least-squares amplitudes of the components plus a constant background.

    components (..., C, P), data and weights (..., P), broadcast against each other (so the
    K perturbed renders of a Jacobian share one data and weight row). Returns (coefficients
    (..., C + 1), model (..., P)); the last coefficient is the background. The normal equations
    are assembled block by block (no design matrix is built: the fitter solves this about a
    thousand times per image). Differentiable, so a fit that solves the linear part at every
    step sees the exact (variable-projection) gradient.
    """
    c = components.shape[-2]
    wc = components * weights.unsqueeze(-2)  # (..., C, P)
    g_cc = wc @ components.transpose(-1, -2)  # (..., C, C)
    g_c1 = wc.sum(-1)  # (..., C)
    batch = g_c1.shape[:-1]
    g_11 = weights.sum(-1).expand(batch).unsqueeze(-1)  # (..., 1)
    gram = torch.cat([torch.cat([g_cc, g_c1.unsqueeze(-1)], -1),
                      torch.cat([g_c1, g_11], -1).unsqueeze(-2)], -2)  # (..., C+1, C+1)
    rhs = torch.cat([(wc @ data.unsqueeze(-1)).squeeze(-1),
                     (weights * data).sum(-1).expand(batch).unsqueeze(-1)], -1)
    scale = torch.diagonal(gram, dim1=-2, dim2=-1).mean(-1, keepdim=True).unsqueeze(-1)
    eye = torch.eye(c + 1, dtype=gram.dtype)
    coef = torch.linalg.solve(gram + ridge * scale * eye, rhs.unsqueeze(-1)).squeeze(-1)
    model = (coef[..., :c].unsqueeze(-2) @ components).squeeze(-2) + coef[..., c:]
    return coef, model
