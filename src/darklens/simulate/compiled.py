"""The simulator's compiled path: the renderer and the noise as a few fused C++ loops.

Eager PyTorch renders an image in dozens of passes over memory (one per elementwise operation,
and the 25-subhalo sum alone is a dozen of them). Written as one branch-free expression per
pixel, the same physics compiles with ``torch.compile`` (inductor's C++ backend: vectorised,
fused loops) into one loop over the pixels with the subhalo sum as an inner reduction, one for
the PSF and one for the noise (the counter-based hash, Box-Muller and the min-max scaling).
On one core that is several times faster than eager (``benchmarks/simulate.py``).

Values agree with the eager path to float rounding, not bit for bit (vectorised transcendental
functions, the order of sums). Within this path they are deterministic and do not depend on
the batch size or split: every per-pixel value is computed by the same vector code whatever
the batch (the batch is a dynamic dimension of one compiled graph; a batch of one is padded to
two so that it runs the same graph), and the only sums are the per-pixel subhalo sums, done in
order. Which path rendered a data set is recorded in its attrs (``simulator_backend``).

Which path renders (the request, ``auto``, the fallback when compiling fails) is decided in
:mod:`darklens.simulate.backend`, not here. The path is float32 only. Compiling costs seconds
per graph (one per kind of image and image size: about 17 s for the first, render and noise,
and 5-10 s for each further one on a 2-core machine with an empty cache; about 2 s with
inductor's on-disk cache warm); graphs are kept per process.

The lensing formulas are not here but in :mod:`darklens.simulate.physics`, shared with the eager
path; this module lays them out for the compiler.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable

import torch
from torch import Tensor

from darklens.simulate import physics, rng

# Keep the per-subhalo terms inside the reduction loop (inductor would otherwise store the
# (B, S, P) weights to memory because two sums read them); let the C++ compiler fuse
# multiply-adds (5% faster; a change of rounding only, the same for every batch); one thread
# per kernel and compiling in this process: OpenMP regions and compile-worker pools hang in
# forked processes (DataLoader workers), and the simulator scales over processes anyway.
_INDUCTOR_OPTIONS = {
    "realize_reads_threshold": 16,
    "cpp.enable_floating_point_contract_flag": "fast",
    "cpp.threads": 1,
    "compile_threads": 1,
}

_graphs: dict[tuple, Callable] = {}


def _call(
    name: str,
    fn: Callable,
    tensors: list[Tensor],
    batch_dims: list[int | None],
    **static,
) -> Tensor:
    """``fn(*tensors, **static)`` through its compiled graph; the output's first dim is the batch.

    ``batch_dims[i]`` is the batch dimension of ``tensors[i]`` (None: it has none). Each
    signature (the static arguments and every shape but the batch) gets a graph of its own,
    with only the batch dynamic, so the code that renders an image does not depend on what was
    rendered before in this process or in earlier ones (dynamo's automatic dynamic shapes and
    its on-disk profile are off here, or a graph compiled after other image sizes would be
    generic in them and round differently). Every batch size runs the same code: a batch of
    one is padded to two (the image repeated), since the compiler specialises size 1. Graphs
    run with one intra-op thread (their kernels are serial) and without autograd: dynamo
    guards on both, and a DataLoader worker (one thread) would otherwise compile them again.
    """
    tensors = [t.contiguous() for t in tensors]
    b = next(t.shape[d] for t, d in zip(tensors, batch_dims, strict=True) if d is not None)
    shapes = tuple(
        (str(t.dtype), tuple(n for i, n in enumerate(t.shape) if i != d))
        for t, d in zip(tensors, batch_dims, strict=True)
    )
    key = (name, shapes, tuple(sorted(static.items())))
    if key not in _graphs:

        def bound(*args: Tensor) -> Tensor:
            return fn(*args, **static)

        # a code object of its own (dynamo keeps graphs and recompile limits per code object)
        digest = hashlib.sha1(repr(key).encode()).hexdigest()[:16]
        bound.__code__ = bound.__code__.replace(co_name=f"darklens_{name}_{digest}")
        _graphs[key] = torch.compile(bound, dynamic=None, options=_INDUCTOR_OPTIONS)
    args = []
    for t, d in zip(tensors, batch_dims, strict=True):
        if d is not None:
            if b == 1:
                t = torch.cat([t, t], d)
            torch._dynamo.mark_dynamic(t, d)
        args.append(t)
    threads = torch.get_num_threads()
    try:
        if threads != 1:
            torch.set_num_threads(1)
        with torch.no_grad(), torch._dynamo.config.patch(
            automatic_dynamic_shapes=False,
            automatic_dynamic_local_pgo=False,
            automatic_dynamic_remote_pgo=False,
        ):
            out = _graphs[key](*args)
    finally:
        if threads != 1:
            torch.set_num_threads(threads)
    return out[:1] if b == 1 else out


# ----------------------------------------------------------------------------- rendering


def _col(t: Tensor, i: int) -> Tensor:
    """Column ``i`` of a per-image table (B, K) as (B, 1, 1), to broadcast over (B, H, W)."""
    return t[:, i : i + 1, None]


def lens_columns(p: dict[str, Tensor]) -> Tensor:
    """Per-image SIE + shear constants (B, 9), float64: ``physics.sie_constants`` (centre,
    cos/sin, q^2, e, b), then gamma1, gamma2."""
    g1, g2 = physics.shear_components(p["shear_gamma"], p["shear_angle"])
    sie = physics.sie_constants(p["theta_e"], p["lens_q"], p["lens_phi"], p["lens_center_x"],
                                p["lens_center_y"])
    return torch.stack([*sie, g1, g2], 1)


def sersic_columns(
    amp: Tensor, r_eff: Tensor, n: Tensor, q: Tensor, phi: Tensor, cx: Tensor, cy: Tensor
) -> Tensor:
    """Per-image Sersic constants (B, 10), float64: centre, cos/sin, q, 1/q, amp, 1/R^2, 1/(2n),
    b_n (``R`` floored at 1e-4 arcsec, as in :func:`physics.sersic_profile`)."""
    return torch.stack(
        [
            cx,
            cy,
            torch.cos(phi),
            torch.sin(phi),
            q,
            1.0 / q,
            amp,
            1.0 / r_eff.clamp_min(1e-4) ** 2,
            0.5 / n,
            physics.sersic_b(n),
        ],
        1,
    )


def _sersic(x: Tensor, y: Tensor, s: Tensor) -> Tensor:
    """:func:`physics.sersic_profile` from :func:`sersic_columns`, with (r/R)^(1/n) written as
    exp(log(r^2/R^2) / (2n)): no square root and no pow (one log and one exp are cheaper)."""
    dx, dy = x - _col(s, 0), y - _col(s, 1)
    c, si = _col(s, 2), _col(s, 3)
    xr, yr = dx * c + dy * si, -dx * si + dy * c
    r2 = (_col(s, 4) * xr * xr + yr * yr * _col(s, 5)).clamp_min(1e-8)
    t = torch.exp(torch.log(r2 * _col(s, 7)) * _col(s, 8))
    return _col(s, 6) * torch.exp(-_col(s, 9) * (t - 1.0))


def _surface_brightness(
    x: Tensor,
    y: Tensor,
    lens: Tensor,
    source: Tensor,
    light: Tensor,
    points: Tensor,
    tnfw: Tensor,
    line: Tensor,
    *,
    use_points: bool,
    use_tnfw: bool,
    use_line: bool,
    use_light: bool,
) -> Tensor:
    """Surface brightness (B, M, M) at the (sub)pixel positions x, y (1, M, M); see ``render``.

    Everything is in one (B, M, M) iteration space, so inductor fuses it into one loop nest.
    """
    # The physics is physics.py's, one formula per component (the eager path uses the same
    # functions); here they run on per-image constants: lens (B, 9) centre, cos/sin, q^2, e, b,
    # gamma1, gamma2 (lens_columns).
    dx, dy = x - _col(lens, 0), y - _col(lens, 1)
    ax, ay = physics.sie_deflection_at(dx, dy, _col(lens, 2), _col(lens, 3), _col(lens, 4),
                                       _col(lens, 5), _col(lens, 6))
    sx, sy = physics.shear_deflection(dx, dy, _col(lens, 7), _col(lens, 8))
    ax, ay = ax + sx, ay + sy
    xs, ys = x.unsqueeze(1), y.unsqueeze(1)  # (1, 1, M, M)
    if use_points:
        # points (3, S, B): x, y, theta_e^2 (0 for padding); summed per pixel, in order
        px, py, th2 = (points[i].t()[..., None, None] for i in range(3))  # (B, S, 1, 1)
        dax, day = physics.point_mass_at(xs - px, ys - py, th2)
        ax = ax + dax.sum(1)
        ay = ay + day.sum(1)
    if use_tnfw:
        # tnfw (5, S, B): x, y, r_s, alpha_rs (0 for padding), r_trunc
        tx, ty, rs, alpha_rs, rt = (tnfw[i].t()[..., None, None] for i in range(5))
        dax, day = physics.tnfw_at(xs - tx, ys - ty, rs, alpha_rs, rt)
        ax = ax + dax.sum(1)
        ay = ay + day.sum(1)
    if use_line:
        # line (B, 6): start x, y, cos, sin, length, L = theta_e^2 / length
        dax, day = physics.line_mass_at(x - _col(line, 0), y - _col(line, 1), _col(line, 2),
                                        _col(line, 3), _col(line, 4), _col(line, 5))
        ax = ax + dax
        ay = ay + day
    sb = _sersic(x - ax, y - ay, source)
    if use_light:
        sb = sb + _sersic(x, y, light)
    return sb


def _render_graph(
    *tensors: Tensor,
    n_pix: int,
    factor: int,
    pixel_area: float,
    psf_radius: int,
    **flags: bool,
) -> Tensor:
    """``_surface_brightness`` of ``tensors[:-1]`` (see ``render``), averaged over the
    supersampling, in flux per pixel, convolved with the PSF taps ``tensors[-1]``."""
    *parts, taps = tensors
    sb = _surface_brightness(*parts, **flags)
    b = sb.shape[0]
    if factor > 1:
        sb = sb.view(b, n_pix, factor, n_pix, factor).mean((2, 4))
    img = sb * pixel_area
    if psf_radius == 0:
        return img
    # separable Gaussian, zero padding: taps (B, 2R+1) along x, then along y
    # (zero borders by concatenation: inductor then writes each pass straight into the middle
    # of a padded buffer instead of evaluating it under masks)
    r, k = psf_radius, 2 * psf_radius + 1
    side = img.new_zeros((b, n_pix, r))
    pad = torch.cat([side, img, side], 2)
    rows = sum(taps[:, t].view(b, 1, 1) * pad[:, :, t : t + n_pix] for t in range(k))
    side = img.new_zeros((b, r, n_pix))
    pad = torch.cat([side, rows, side], 1)
    return sum(taps[:, t].view(b, 1, 1) * pad[:, t : t + n_pix, :] for t in range(k))


def render(
    x: Tensor,
    y: Tensor,
    lens: Tensor,
    source: Tensor,
    light: Tensor | None,
    points: Tensor | None,
    tnfw: Tensor | None,
    line: Tensor | None,
    taps: Tensor | None,
    *,
    n_pix: int,
    factor: int,
    pixel_scale: float,
) -> Tensor:
    """Noiseless float32 images (B, H, W), PSF applied, through the compiled graph.

    ``lens`` (B, 9) from :func:`lens_columns`, ``source``/``light`` (B, 10) from
    :func:`sersic_columns`, ``points`` (3, S, B) x, y, theta_e^2, ``tnfw`` (5, S, B) x, y, r_s,
    alpha_rs, r_trunc, ``line`` (B, 6) start x, y, cos, sin, length, L; ``taps`` (B, 2R+1)
    the PSF along each axis. None switches a part off. The grid x, y is (1, M, M) with
    M = n_pix * factor.
    """
    b = lens.shape[0]
    f32 = torch.float32
    flags = {
        "use_points": points is not None,
        "use_tnfw": tnfw is not None,
        "use_line": line is not None,
        "use_light": light is not None,
    }
    empty = lens.new_zeros((b, 10))
    none_sb = torch.zeros((5, 1, b), dtype=f32)
    tensors = [
        x,
        y,
        lens,
        source,
        light if light is not None else empty,
        points if points is not None else none_sb[:3],
        tnfw if tnfw is not None else none_sb,
        line if line is not None else empty[:, :6],
        taps if taps is not None else empty[:, :1],
    ]
    # the grid has no batch; the subhalo tables (K, S, B) have theirs last
    return _call(
        "render",
        _render_graph,
        [t.to(f32) for t in tensors],
        [None, None, 0, 0, 0, 2, 2, 0, 0],
        n_pix=n_pix,
        factor=factor,
        pixel_area=pixel_scale**2,
        psf_radius=0 if taps is None else (taps.shape[1] - 1) // 2,
        **flags,
    )


# ----------------------------------------------------------------------------- noise


def _observe_graph(
    clean: Tensor, sigma: Tensor, ka: Tensor, kb: Tensor, *, minmax: bool
) -> Tensor:
    b, h, w = clean.shape
    z = rng.normals_from_keys(ka, kb, h * w, torch.float32).view(b, h, w)
    noisy = clean + sigma * z
    if not minmax:
        return noisy
    lo = noisy.amin((1, 2), keepdim=True)
    hi = noisy.amax((1, 2), keepdim=True)
    return (noisy - lo) / (hi - lo).clamp_min(1e-12)


def observe(clean: Tensor, sigma: Tensor, ka: Tensor, kb: Tensor, minmax: bool) -> Tensor:
    """``clean + sigma * N(0, 1)`` (noise from the keys ``ka, kb`` (B,)), min-max scaled or not.

    ``sigma`` is (B, 1, 1) or (B, H, W). float32, through the compiled graph.
    """
    f32 = torch.float32
    tensors = [clean.to(f32), sigma.to(f32), ka.view(-1, 1), kb.view(-1, 1)]
    return _call("observe", _observe_graph, tensors, [0, 0, 0, 0], minmax=minmax)


def psf_radius(pixel_scale: float, fwhm_max: float) -> int:
    """Half-width in pixels of the PSF taps: 4 sigma of the widest PSF, at least 1."""
    return max(1, int(math.ceil(4 * float(physics.fwhm_to_sigma(fwhm_max)) / pixel_scale)))
