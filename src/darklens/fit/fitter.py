"""Batched least-squares fit of the smooth lens to every image, and what is left over.

Levenberg-Marquardt on the pixel chi-square, in the unconstrained parameters of
:mod:`darklens.fit.smooth_model`: the Jacobian comes from forward differences in one batched
render per component (a component is re-rendered only for the parameters it depends on: the
lens light not for the mass model or the source), the linear amplitudes are solved exactly
inside every evaluation (variable projection), and each image keeps its own damping, so a
batch of images converges image by image. Near the minimum this converges quadratically, which
a first-order optimiser cannot do at the signal-to-noise of real lens images. The first stages
render at one sample per pixel; the last, a few iterations, at the instrument's supersampling,
with the Jacobian still taken at one sample per pixel (an approximate Jacobian changes the
step, never the cost a step must lower). With the compiled renderer this fits 5.5-32 images per
CPU-second on one core at 64x64, fewest where the PSF and lens light are fitted too
(``benchmarks/refit.py fitter``).

The noise weights follow :mod:`darklens.fit.noise`: first the border sigma alone, then, once
the shape is fitted, the photon term measured from the fit's own bright-pixel residuals.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import Tensor

from darklens.fit import noise
from darklens.fit.instrument import Instrument
from darklens.fit.smooth_model import (
    RIDGE,
    SmoothRenderer,
    solve_linear,
    to_physical,
    to_unconstrained,
)

FD_STEP = 1e-3  # in the unconstrained parameters (sigmoid arguments)


@dataclass
class FitOptions:
    """How hard to fit: LM iterations per stage, noise re-estimations, batch size."""

    start_iterations: int = 6  # LM iterations for every start before the best is kept
    # the same where the PSF is fitted too: a wide PSF with a compact source and the true pair
    # are both minima there, and after 6 iterations the wrong start often still looks best
    # (on the bright lenstronomy set 12 moved the residual-chi2 AUROC from 0.915 to 0.945)
    psf_start_iterations: int = 12
    iterations: int = 20  # LM iterations per stage
    final_iterations: int | None = 2  # LM iterations of the last (supersampled) stage
    coarse_jacobian: bool = True  # supersampled stage: Jacobian at one sample per pixel
    stages: int = 2  # stage 1: border sigma only; later stages: + photon noise
    batch_size: int = 64
    # relative chi-square change of an accepted step that counts as converged: 1e-4 of a
    # 64x64 image's chi-square is about 0.4, far below its noise (sqrt(2 * 4096) = 90);
    # on model-a64 it ends fits 15% sooner than 1e-5 with the same chi-square and radii
    tolerance: float = 1e-4
    moment_starts: int = 4  # how many moment-based starts (besides a network's guess, if any)
    # with a network's guess, the moment-based starts are fallbacks: tried only for the images
    # whose cost from the guess is above this multiple of the batch's median (a good guess
    # makes them redundant, and run for every image they cost a start's iterations each)
    fallback_ratio: float = 2.0
    # where the PSF is fitted: the best start is tried again from these FWHMs (in pixels), since
    # a wider PSF and a more compact source make a second minimum at high signal-to-noise
    psf_starts: tuple[float, ...] = (1.0, 1.6)
    # a PSF restart is tried only for the images whose fitted FWHM is more than this many
    # pixels from the restart's (None: every image); a start that near the current best
    # converges back to it
    psf_restart_gap: float | None = None


@dataclass
class SmoothFit:
    """The fit of a batch: everything per image, numpy, first axis the image."""

    params: dict[str, np.ndarray]  # physical parameters, amplitudes, background, s0, s1
    model: np.ndarray  # (B, H, W) smooth model image
    residual: np.ndarray  # (B, H, W) (data - model) / sigma
    chi2_red: np.ndarray  # (B,)
    converged: np.ndarray  # (B,) bool
    u: np.ndarray  # (B, K) unconstrained parameters (a start for a later fit)
    iterations: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __len__(self) -> int:
        return int(self.chi2_red.shape[0])


class SmoothLensFitter:
    """Fits the smooth model of one instrument; see the module docstring."""

    def __init__(self, inst: Instrument, options: FitOptions | None = None):
        self.inst = inst
        self.options = options or FitOptions()
        self.renderer = SmoothRenderer(inst)  # the instrument's own sampling: final stage
        self.coarse = SmoothRenderer(replace(inst, supersample=1)) \
            if inst.supersample > 1 else self.renderer
        self._active = self.renderer  # the renderer residuals use; fit_batch switches it
        self._jacobian = self.renderer  # the renderer the Jacobian uses
        # the last few renders of each renderer: (u, components) pairs; see _components
        self._renders: dict[int, list[tuple[Tensor, Tensor]]] = {}

    # -- rendering, with the renders LM has just made reused ------------------------------------
    def _cached(self, renderer: SmoothRenderer, u: Tensor) -> tuple[Tensor, Tensor]:
        """Components (B, C, P) of the rows of ``u`` rendered lately by ``renderer`` (rows not
        found are left empty) and the mask (B,) of the rows found. LM renders the same
        parameters more than once (a step's trial, then the next Jacobian's base; the model
        that sets the noise weights, then the first cost), and components depend on ``u``
        alone, so a row found here is exactly what rendering it again would give."""
        b = u.shape[0]
        found = torch.zeros(b, dtype=torch.bool)
        out = torch.empty((b, renderer.n_components, renderer.inst.n_pix ** 2))
        for old_u, old_comps in self._renders.get(id(renderer), []):
            same = (u.unsqueeze(1) == old_u.unsqueeze(0)).all(-1)  # (B, B_old)
            hit = same.any(1) & ~found
            if hit.any():
                out[hit] = old_comps[same[hit].to(torch.int8).argmax(1)]
                found |= hit
        return out, found

    def _remember(self, renderer: SmoothRenderer, u: Tensor, comps: Tensor) -> None:
        kept = self._renders.setdefault(id(renderer), [])
        kept.insert(0, (u.clone(), comps))
        del kept[3:]

    def _components(self, renderer: SmoothRenderer, u: Tensor) -> Tensor:
        """``renderer.components(u)``, rendering only the rows not rendered lately."""
        comps, found = self._cached(renderer, u)
        missing = torch.nonzero(~found).squeeze(-1)
        if missing.numel():
            comps[missing] = renderer.components(u[missing])
            self._remember(renderer, u[missing], comps[missing])
        return comps

    # -- residuals and Jacobian ---------------------------------------------------------------
    def _weighted_residual(self, u: Tensor, data: Tensor, sqrt_w: Tensor) -> Tensor:
        return self._residual_of(self._components(self._active, u), data, sqrt_w)

    @staticmethod
    def _residual_of(comps: Tensor, data: Tensor, sqrt_w: Tensor) -> Tensor:
        _, model = solve_linear(comps, data, sqrt_w * sqrt_w)
        return sqrt_w * (data - model)

    def _residual_and_jacobian(self, u: Tensor, data: Tensor,
                               sqrt_w: Tensor) -> tuple[Tensor, Tensor]:
        """r (B, P) and the transposed Jacobian J^T = (dr/du)^T (B, K, P), forward differences.

        Each component is re-rendered only for the parameters it depends on
        (:meth:`SmoothRenderer.dependencies`), and the base model and all the shifted renders
        go through one :meth:`SmoothRenderer.render_rows` call. The Jacobian comes from
        ``self._jacobian``: the active renderer, or in the supersampled stage the
        one-sample-per-pixel renderer (an approximate Jacobian only changes the step, never
        the cost a step must lower).
        """
        b, k = u.shape
        jr = self._jacobian
        n_c, deps = jr.n_components, jr.dependencies()
        base, found = self._cached(jr, u)
        missing = torch.nonzero(~found).squeeze(-1)
        n_m = missing.numel()
        rows = [u[missing].repeat(n_c, 1)]
        parts = [torch.arange(n_c).repeat_interleave(n_m)]
        for c, cols in enumerate(deps):
            step = u.unsqueeze(0).repeat(len(cols), 1, 1)
            step[torch.arange(len(cols)), :, cols] += FD_STEP
            rows.append(step.reshape(-1, k))
            parts.append(torch.full((len(cols) * b,), c, dtype=torch.int64))
        rendered = jr.render_rows(torch.cat(rows), torch.cat(parts))
        if n_m:
            base[missing] = rendered[:n_c * n_m].view(n_c, n_m, -1).transpose(0, 1)
            self._remember(jr, u[missing], base[missing])
        rendered = rendered[n_c * n_m:]
        r0 = self._residual_of(base, data, sqrt_w)
        r = r0 if jr is self._active else self._weighted_residual(u, data, sqrt_w)
        jac_t = torch.empty((k, b, r.shape[1]), dtype=r.dtype)  # (K, B, P) until transposed
        moved = {}  # (parameter, component) -> rendered rows (B, P)
        at = 0
        for c, cols in enumerate(deps):
            for i, col in enumerate(cols):
                moved[col, c] = rendered[at + i * b:at + (i + 1) * b]
            at += len(cols) * b
        shared = sorted({col for cols in deps for col in cols
                         if sum(col in other for other in deps) > 1})
        for c, cols in enumerate(deps):
            alone = [col for col in cols if col not in shared]
            if alone:  # one component moves: the shortcut solve, rounding-matched base first
                stack = torch.stack([base[:, c]] + [moved[col, c] for col in alone])
                both = _one_moved_residual(stack, c, base, data, sqrt_w)
                jac_t[alone] = (both[1:] - both[:1]) / FD_STEP
        if shared:  # the lens centre moves the mass model and the lens light: the full solve
            stack = base.unsqueeze(0).repeat(len(shared), 1, 1, 1)  # (S, B, C, P)
            for i, col in enumerate(shared):
                for c in range(n_c):
                    if (col, c) in moved:
                        stack[i, :, c] = moved[col, c]
            jac_t[shared] = (self._residual_of(stack, data, sqrt_w) - r0) / FD_STEP
        return r, jac_t.transpose(0, 1).contiguous()

    def _cost(self, u: Tensor, data: Tensor, sqrt_w: Tensor) -> Tensor:
        return self._weighted_residual(u, data, sqrt_w).square().sum(-1)

    # -- the solver ---------------------------------------------------------------------------
    @torch.no_grad()
    def _levenberg_marquardt(self, u: Tensor, data: Tensor, sqrt_w: Tensor,
                             iterations: int) -> tuple[Tensor, Tensor, Tensor]:
        """Improve ``u`` (B, K); returns (u, cost, iterations used) per image."""
        b, k = u.shape
        lam = torch.full((b,), 1e-3, dtype=u.dtype)
        cost = self._cost(u, data, sqrt_w)
        active = torch.ones(b, dtype=torch.bool)
        used = torch.zeros(b, dtype=torch.int64)
        eye = torch.eye(k, dtype=u.dtype)
        tol = self.options.tolerance
        for _ in range(iterations):
            idx = torch.nonzero(active).squeeze(-1)
            if idx.numel() == 0:
                break
            ua, da, wa = u[idx], data[idx], sqrt_w[idx]
            r, jac_t = self._residual_and_jacobian(ua, da, wa)
            jtj = jac_t @ jac_t.transpose(1, 2)
            grad = (jac_t @ r.unsqueeze(-1)).squeeze(-1)
            diag = torch.diagonal(jtj, dim1=1, dim2=2)
            damp = lam[idx].view(-1, 1, 1) * (torch.diag_embed(diag) +
                                              1e-9 * diag.mean(-1).view(-1, 1, 1) * eye)
            step = torch.linalg.solve(jtj + damp, -grad.unsqueeze(-1)).squeeze(-1)
            step = torch.nan_to_num(step).clamp(-3.0, 3.0)
            trial = ua + step
            new_cost = self._cost(trial, da, wa)
            old = cost[idx]
            better = torch.isfinite(new_cost) & (new_cost < old)
            u[idx] = torch.where(better.unsqueeze(-1), trial, ua)
            cost[idx] = torch.where(better, new_cost, old)
            lam[idx] = torch.where(better, (lam[idx] / 3).clamp_min(1e-7),
                                   (lam[idx] * 4).clamp_max(1e7))
            used[idx] += 1
            small = better & ((old - new_cost) < tol * old)
            stuck = ~better & (lam[idx] >= 1e7)
            active[idx] = ~(small | stuck)
        return u, cost, used

    def _weights(self, s0: Tensor, s1: Tensor, light: Tensor) -> Tensor:
        var = s0.unsqueeze(-1) + s1.unsqueeze(-1) * light.clamp_min(0)
        return var.rsqrt()

    @torch.no_grad()
    def _model(self, u: Tensor, data: Tensor, sqrt_w: Tensor) -> tuple[Tensor, Tensor]:
        comps = self._components(self._active, u)
        return solve_linear(comps, data, sqrt_w * sqrt_w)

    @torch.no_grad()
    def fit_batch(self, images: Tensor, starts: Tensor,
                  fallback: Tensor | None = None) -> SmoothFit:
        """Fit images (B, H, W) from starting points ``starts`` (S, B, K): every start gets a
        first stage of LM, the best continues. ``fallback`` (F, B, K): starts tried only for
        the images whose best cost is above ``fallback_ratio`` times the batch's median (all
        of them in a batch of fewer than 8)."""
        opts, inst = self.options, self.inst
        b = images.shape[0]
        data = images.reshape(b, -1).float()
        finite = torch.isfinite(data).all(-1)
        data = torch.where(finite.unsqueeze(-1), data, torch.zeros_like(data))
        if inst.noise is not None:
            s0 = torch.full((b,), float(inst.noise) ** 2)
        else:
            s0 = noise.border_sigma(data, inst.n_pix)[1] ** 2
        s1 = torch.zeros(b)
        sqrt_w = self._weights(s0, s1, torch.zeros_like(data))
        self._active = self._jacobian = self.coarse
        names = [spec.name for spec in self.renderer.specs]
        start_its = opts.psf_start_iterations if "psf_fwhm" in names else opts.start_iterations
        best_u, best_cost, used = None, None, torch.zeros(b, dtype=torch.int64)
        for start in starts:
            u, cost, n = self._levenberg_marquardt(start.clone().float(), data, sqrt_w,
                                                   start_its)
            used = used + n
            if best_u is None:
                best_u, best_cost = u, cost
            else:
                better = cost < best_cost
                best_u = torch.where(better.unsqueeze(-1), u, best_u)
                best_cost = torch.where(better, cost, best_cost)
        if fallback is not None and len(fallback):
            poor = best_cost > opts.fallback_ratio * best_cost.median() if b >= 8 \
                else torch.ones(b, dtype=torch.bool)
            poor |= ~torch.isfinite(best_cost)
            idx = torch.nonzero(poor).squeeze(-1)
            for start in fallback:
                if idx.numel() == 0:
                    break
                u, cost, n = self._levenberg_marquardt(start[idx].clone().float(), data[idx],
                                                       sqrt_w[idx], start_its)
                used[idx] += n
                better = cost < best_cost[idx]
                best_u[idx] = torch.where(better.unsqueeze(-1), u, best_u[idx])
                best_cost[idx] = torch.where(better, cost, best_cost[idx])
        if "psf_fwhm" in names and opts.psf_starts:
            col = names.index("psf_fwhm")
            phys = {"psf_fwhm": torch.tensor([f * inst.pixel_scale for f in opts.psf_starts])}
            values = to_unconstrained(phys, [self.renderer.specs[col]])[:, 0]
            for fwhm, value in zip(opts.psf_starts, values, strict=True):
                idx = torch.arange(b)
                if opts.psf_restart_gap is not None:
                    now = to_physical(best_u, self.renderer.specs)["psf_fwhm"]
                    far = (now / inst.pixel_scale - fwhm).abs() > opts.psf_restart_gap
                    idx = torch.nonzero(far).squeeze(-1)
                    if idx.numel() == 0:
                        continue
                start = best_u[idx].clone()
                start[:, col] = value
                u, cost, n = self._levenberg_marquardt(start, data[idx], sqrt_w[idx],
                                                       start_its)
                used[idx] += n
                better = cost < best_cost[idx]
                best_u[idx] = torch.where(better.unsqueeze(-1), u, best_u[idx])
                best_cost[idx] = torch.where(better, cost, best_cost[idx])
        u, _, n = self._levenberg_marquardt(best_u, data, sqrt_w, opts.iterations)
        used += n
        for stage in range(1, opts.stages):
            if stage == opts.stages - 1:
                self._active = self.renderer
                self._jacobian = self.coarse if opts.coarse_jacobian else self.renderer
            coef, model = self._model(u, data, sqrt_w)
            light = model - coef[:, -1:]
            if inst.noise is None:
                s0, s1 = noise.binned_variance(data - model, light)
            else:
                s1 = noise.poisson_gain(data - model, light, s0)
            sqrt_w = self._weights(s0, s1, light)
            last = stage == opts.stages - 1 and opts.final_iterations is not None
            u, _, n = self._levenberg_marquardt(u, data, sqrt_w, opts.final_iterations
                                                if last else opts.iterations)
            used += n
        self._active = self._jacobian = self.renderer
        coef, model = self._model(u, data, sqrt_w)
        light = model - coef[:, -1:]
        sigma_inv = self._weights(s0, s1, light)
        resid = (data - model) * sigma_inv
        dof = max(data.shape[1] - u.shape[1] - coef.shape[1], 1)
        chi2_red = resid.square().sum(-1) / dof
        # "converged" means fitted: finite pixels in, a finite fit out. A poor fit is not a
        # failure: a large residual is what substructure leaves, and detectors score it.
        converged = finite & torch.isfinite(chi2_red) & torch.isfinite(u).all(-1)
        resid = torch.where(finite.unsqueeze(-1), torch.nan_to_num(resid), torch.zeros_like(resid))
        params = {k: v.double().numpy() for k, v in to_physical(u, self.renderer.specs).items()}
        params["source_amp"] = coef[:, 0].double().numpy()
        if inst.lens_light:
            params["light_amp"] = coef[:, 1].double().numpy()
        params["background"] = coef[:, -1].double().numpy()
        params["noise_s0"] = s0.double().numpy()
        params["noise_s1"] = s1.double().numpy()
        n = inst.n_pix
        return SmoothFit(params=params, model=model.reshape(b, n, n).numpy(),
                         residual=resid.reshape(b, n, n).numpy(),
                         chi2_red=chi2_red.double().numpy(), converged=converged.numpy(),
                         u=u.numpy(), iterations=used.numpy())


def _one_moved_residual(moved: Tensor, c: int, base: Tensor, data: Tensor,
                        sqrt_w: Tensor) -> Tensor:
    """Weighted residuals (N, B, P) when component ``c`` of ``base`` (B, C, P) is replaced by
    each of ``moved`` (N, B, P) and the amplitudes and background are solved again: what
    :func:`solve_linear` gives for the full (N, B, C, P) stack, with the products among the
    unmoved components (and the background and data) taken once per image instead of once per
    row (the Jacobian's linear algebra was a fifth of the fitter's time)."""
    w = sqrt_w * sqrt_w
    others = torch.cat([base[:, :c], base[:, c + 1:], torch.ones_like(base[:, :1])], 1)
    fixed = torch.cat([others, data.unsqueeze(1)], 1)  # (B, C + 1, P): others, 1, data
    w_moved = moved * w  # (N, B, P)
    g_mm = (w_moved * moved).sum(-1, keepdim=True)  # (N, B, 1)
    cross = torch.einsum("nbp,bjp->nbj", w_moved, fixed)  # (N, B, C + 1)
    w_fixed = fixed[:, :-1] * w.unsqueeze(1)  # (B, C, P)
    g_oo = w_fixed @ others.transpose(1, 2)  # (B, C, C)
    rhs_o = (w_fixed * data.unsqueeze(1)).sum(-1)  # (B, C)
    n, m = moved.shape[0], others.shape[1]
    gram = torch.empty((n, moved.shape[1], m + 1, m + 1), dtype=moved.dtype)
    gram[..., 0, 0] = g_mm[..., 0]
    gram[..., 0, 1:] = cross[..., :m]
    gram[..., 1:, 0] = cross[..., :m]
    gram[..., 1:, 1:] = g_oo
    rhs = torch.cat([cross[..., m:], rhs_o.expand(n, -1, -1)], -1)  # (N, B, C + 1)
    scale = torch.diagonal(gram, dim1=-2, dim2=-1).mean(-1, keepdim=True).unsqueeze(-1)
    eye = torch.eye(m + 1, dtype=gram.dtype)
    coef = torch.linalg.solve(gram + RIDGE * scale * eye, rhs.unsqueeze(-1)).squeeze(-1)
    model = coef[..., :1] * moved + torch.einsum("nbj,bjp->nbp", coef[..., 1:], others)
    return sqrt_w * (data - model)


def concatenate_fits(fits: list[SmoothFit]) -> SmoothFit:
    """One SmoothFit from several batches, in order."""
    return SmoothFit(
        params={k: np.concatenate([f.params[k] for f in fits]) for k in fits[0].params},
        model=np.concatenate([f.model for f in fits]),
        residual=np.concatenate([f.residual for f in fits]),
        chi2_red=np.concatenate([f.chi2_red for f in fits]),
        converged=np.concatenate([f.converged for f in fits]),
        u=np.concatenate([f.u for f in fits]),
        iterations=np.concatenate([f.iterations for f in fits]),
    )


def fit_smooth_lens(images: np.ndarray | Tensor, inst: Instrument,
                    options: FitOptions | None = None, progress: bool = False,
                    guess: torch.nn.Module | None = None) -> SmoothFit:
    """Fit the smooth lens to images (N, H, W) or (N, 1, H, W), in batches, from the
    moment-based starts of :mod:`darklens.fit.initial_guess` and, where given, the guess of a
    trained network (:class:`darklens.fit.amortised.InitialGuessNet`).

    Images with NaN or infinite pixels are not fitted: their residual is zero and their
    ``converged`` flag False, so no NaN ever leaves the fitter.
    """
    from darklens.fit.initial_guess import heuristic_starts

    x = torch.as_tensor(np.asarray(images), dtype=torch.float32)
    if x.ndim == 4:
        if x.shape[1] != 1:
            raise ValueError(f"the fitter takes one-channel images, got {tuple(x.shape)}")
        x = x[:, 0]
    if x.ndim != 3 or x.shape[1] != inst.n_pix or x.shape[2] != inst.n_pix:
        raise ValueError(f"images of shape {tuple(x.shape)} do not match the instrument's "
                         f"{inst.n_pix}x{inst.n_pix} pixels")
    fitter = SmoothLensFitter(inst, options)
    size = fitter.options.batch_size
    batches = range(0, x.shape[0], size)
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc="fitting", unit="batch")
    fits = []
    for lo in batches:
        chunk = x[lo:lo + size]
        flat = torch.nan_to_num(chunk.reshape(chunk.shape[0], -1), nan=0.0, posinf=0.0,
                                neginf=0.0)
        starts = heuristic_starts(flat, inst)[: fitter.options.moment_starts]
        fallback = None
        if guess is not None:  # the moment-based starts become fallbacks
            with torch.no_grad():
                net_start = guess(flat.view(-1, 1, inst.n_pix, inst.n_pix)).clamp(-8, 8)
            starts, fallback = net_start.unsqueeze(0), starts
        if starts.shape[0] == 0:
            raise ValueError("no starting point: moment_starts is 0 and there is no guess")
        fits.append(fitter.fit_batch(chunk, starts, fallback))
    return concatenate_fits(fits)
