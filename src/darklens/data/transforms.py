"""Augmentations that keep a lens a lens, batched in torch, and the two-view wrapper.

Named sets (``AUGMENTATION_SETS``): ``none``; ``noise`` (extra noise only: the infotheoretic
detector's default, see its docstring for the measurements); ``dihedral`` (right angles and
flips, exact: pixels are moved, never interpolated) and ``dihedral+shift`` (plus whole-pixel
shifts); ``geometric`` (any angle, flips, sub-pixel shifts); ``geometric+noise``; ``full``
(plus PSF jitter and brightness).

Lensing images are rotation-invariant in distribution, so rotations, flips and small shifts are
positives for contrastive training, never pseudo-anomalies. We avoid zooms and crops: they
change the Einstein radius, a physical property of the lens. Every random draw comes from the
``torch.Generator`` passed in (drawn on the CPU, then moved to the images' device), so a seed
fixes every view.

Pipeline, in order (each step can be switched off; see ``AugmentConfig``):

1. Geometry, one bilinear resampling (or, for right angles with whole-pixel or no shifts, an
   exact permutation of the pixels): a rotation about the image centre (any angle, or right
   angles only), a flip, and a shift of up to ``max_shift`` pixels (sub-pixel or whole pixels).
   Corners that a rotation brings in from outside the frame are filled with background plus
   noise at the estimated noise level (not zeros, which would be a tell-tale noise-free
   patch). Bilinear interpolation averages neighbouring pixels and so lowers the white-noise
   variance by a per-pixel factor sum(w_k^2) (down to 1/4 at half-pixel offsets); with
   ``restore_noise`` we add back noise of variance sigma^2 (1 - sum w_k^2) so augmented views
   keep the noise level of untouched test images.
2. PSF jitter: an extra Gaussian blur with a per-image width in [0, psf_sigma] pixels.
3. Brightness: multiply by a factor in [1 - brightness, 1 + brightness].
4. Extra noise: Gaussian noise of standard deviation u * sigma_hat with u ~ U(0, noise_level),
   where sigma_hat is the image's own noise level, estimated robustly from its border pixels
   (1.4826 x median absolute deviation), floored at ``noise_floor`` x the image's standard
   deviation so that noiseless images still get some. This lowers the signal-to-noise ratio
   by at most sqrt(1 + noise_level^2) (1.12 at the default 0.5). A true re-draw of the noise
   at the same SNR needs the noiseless image, i.e. the simulator rendering the lens twice.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

ROTATIONS: tuple[str, ...] = ("none", "right", "any")


@dataclass(frozen=True)
class AugmentConfig:
    """What an augmentation does; every field is a switch or a maximum amplitude."""

    rotate: str = "any"  # "none", "right" (multiples of 90 degrees), "any" (uniform angle)
    flip: bool = True  # a random mirror (with rotations this gives the full O(2) group)
    max_shift: float = 1.0  # pixels, uniform in [-max_shift, max_shift] on each axis
    subpixel: bool = True  # False: whole-pixel shifts only
    restore_noise: bool = True  # add back the noise variance lost to interpolation
    psf_sigma: float = 0.0  # maximum extra Gaussian blur width (pixels)
    brightness: float = 0.0  # maximum relative brightness change
    noise_level: float = 0.0  # maximum extra noise, as a fraction of the estimated noise sigma
    noise_floor: float = 0.02  # sigma_hat >= noise_floor * image std (for noiseless images)
    border: int = 4  # width (pixels) of the frame used to estimate background and noise

    def __post_init__(self) -> None:
        if self.rotate not in ROTATIONS:
            raise ValueError(f"rotate must be one of {ROTATIONS}, got {self.rotate!r}")
        for key in ("max_shift", "psf_sigma", "brightness", "noise_level", "noise_floor"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)}")
        if self.brightness >= 1:
            raise ValueError(f"brightness must be < 1, got {self.brightness}")


AUGMENTATION_SETS: dict[str, AugmentConfig] = {
    "none": AugmentConfig(rotate="none", flip=False, max_shift=0.0),
    "dihedral": AugmentConfig(rotate="right", max_shift=0.0),
    "dihedral+shift": AugmentConfig(rotate="right", max_shift=1.0, subpixel=False),
    "noise": AugmentConfig(rotate="none", flip=False, max_shift=0.0, noise_level=1.0),
    "geometric": AugmentConfig(),
    "geometric+noise": AugmentConfig(noise_level=0.5),
    "full": AugmentConfig(noise_level=0.5, psf_sigma=0.5, brightness=0.05),
}


def estimate_background(images: Tensor, border: int = 4) -> tuple[Tensor, Tensor]:
    """Per-image background level and noise sigma from the border frame, each (B,).

    The background is the median of the border pixels, sigma is 1.4826 x their median absolute
    deviation (robust to a lensed arc touching the edge).
    """
    b, _, h, w = images.shape
    border = max(1, min(border, h // 2, w // 2))
    mask = torch.ones(h, w, dtype=torch.bool, device=images.device)
    mask[border:h - border, border:w - border] = False
    frame = images.flatten(start_dim=1)[:, mask.flatten()]
    level = frame.median(dim=1).values
    sigma = 1.4826 * (frame - level[:, None]).abs().median(dim=1).values
    return level, sigma


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def _gaussian_blur(images: Tensor, sigmas: Tensor) -> Tensor:
    """Blur each image with its own Gaussian width (pixels); width 0 leaves it unchanged."""
    b, c, h, w = images.shape
    radius = max(1, math.ceil(3 * float(sigmas.max())))
    radius = min(radius, h // 2 - 1, w // 2 - 1)
    x = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    s = sigmas.to(images).clamp_min(1e-3)[:, None]
    k1 = torch.exp(-0.5 * (x[None, :] / s) ** 2)
    k1 = k1 / k1.sum(dim=1, keepdim=True)  # (B, 2r+1); a delta when s is tiny
    kernel = (k1[:, :, None] * k1[:, None, :]).repeat_interleave(c, dim=0)[:, None]
    padded = F.pad(images.reshape(1, b * c, h, w), (radius,) * 4, mode="reflect")
    return F.conv2d(padded, kernel, groups=b * c).reshape(b, c, h, w)


class LensAugment:
    """A random lens-preserving augmentation: ``augment(images, generator) -> images``.

    ``images`` is (B, C, H, W) with H == W when rotating; the output has the same shape, dtype
    and device. Each image gets its own independent draw.
    """

    def __init__(self, config: AugmentConfig | None = None, **overrides: Any) -> None:
        self.config = replace(config or AugmentConfig(), **overrides)

    def __repr__(self) -> str:
        return f"LensAugment({asdict(self.config)})"

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if images.dim() != 4:
            raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
        cfg = self.config
        out = images
        level, sigma = estimate_background(images, cfg.border)
        std = images.flatten(start_dim=1).std(dim=1)
        sigma = torch.maximum(sigma, cfg.noise_floor * std)
        if cfg.rotate != "none" or cfg.flip or cfg.max_shift > 0:
            out = self._geometry(out, level, sigma, generator)
        b = images.shape[0]
        if cfg.psf_sigma > 0:
            out = _gaussian_blur(out, _uniform(b, 0.0, cfg.psf_sigma, generator))
        if cfg.brightness > 0:
            factor = _uniform(b, 1 - cfg.brightness, 1 + cfg.brightness, generator)
            out = out * factor.to(out)[:, None, None, None]
        if cfg.noise_level > 0:
            amp = _uniform(b, 0.0, cfg.noise_level, generator).to(out) * sigma
            noise = torch.randn(out.shape, generator=generator).to(out)
            out = out + amp[:, None, None, None] * noise
        return out

    def _geometry(
        self, images: Tensor, level: Tensor, sigma: Tensor, generator: torch.Generator | None
    ) -> Tensor:
        cfg = self.config
        b, c, h, w = images.shape
        if cfg.rotate != "none" and h != w:
            raise ValueError(f"rotations need square images, got {h}x{w}")
        if cfg.rotate == "any":
            angle = _uniform(b, 0.0, 2 * math.pi, generator)
        elif cfg.rotate == "right":
            angle = torch.randint(0, 4, (b,), generator=generator).double() * (math.pi / 2)
        else:
            angle = torch.zeros(b, dtype=torch.float64)
        flip = torch.rand(b, generator=generator) < 0.5
        if not cfg.flip:
            flip = torch.zeros(b, dtype=torch.bool)
        shift = _uniform(2 * b, -cfg.max_shift, cfg.max_shift, generator).reshape(b, 2)
        if not cfg.subpixel:
            shift = shift.round()
        if cfg.rotate != "any" and (cfg.max_shift == 0 or not cfg.subpixel):
            return self._exact_geometry(images, angle, flip, shift, level, sigma, generator)
        cos, sin = torch.cos(angle.double()), torch.sin(angle.double())
        cos, sin = cos.round(decimals=12), sin.round(decimals=12)  # right angles exactly
        fx = torch.where(flip, -1.0, 1.0).double()
        theta = torch.zeros(b, 2, 3, dtype=torch.float64)
        theta[:, 0, 0], theta[:, 0, 1] = cos * fx, -sin
        theta[:, 1, 0], theta[:, 1, 1] = sin * fx, cos
        theta[:, 0, 2] = 2 * shift[:, 0].double() / w  # normalised coordinates span 2 / width
        theta[:, 1, 2] = 2 * shift[:, 1].double() / h
        theta = theta.to(device=images.device, dtype=images.dtype)
        grid = F.affine_grid(theta, [b, c, h, w], align_corners=False)
        out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros",
                            align_corners=False)
        inside = F.grid_sample(torch.ones_like(images[:, :1]), grid, mode="bilinear",
                               padding_mode="zeros", align_corners=False)
        lvl = level.to(images)[:, None, None, None]
        sig = sigma.to(images)[:, None, None, None]
        fill = lvl + sig * torch.randn(images.shape, generator=generator).to(images)
        out = out + (1.0 - inside) * fill
        if cfg.restore_noise:
            # Bilinear weights at fractional offset (u, v) shrink white-noise variance by
            # ((1-u)^2 + u^2) ((1-v)^2 + v^2); add the difference back.
            px = ((grid[..., 0] + 1) * w - 1) / 2
            py = ((grid[..., 1] + 1) * h - 1) / 2
            u, v = (px - px.round()).abs(), (py - py.round()).abs()  # in [0, 1/2]
            u, v = u.masked_fill(u < 1e-4, 0.0), v.masked_fill(v < 1e-4, 0.0)  # float noise
            kept = ((1 - u) ** 2 + u**2) * ((1 - v) ** 2 + v**2)
            lost = (1.0 - kept).clamp_min(0.0)[:, None] * inside
            extra = torch.randn(images.shape, generator=generator).to(images)
            out = out + sig * lost.sqrt() * extra
        return out


    @staticmethod
    def _exact_geometry(images: Tensor, angle: Tensor, flip: Tensor, shift: Tensor,
                        level: Tensor, sigma: Tensor, generator: torch.Generator | None
                        ) -> Tensor:
        """Right angles, flips and whole-pixel shifts by moving pixels: no interpolation.

        The same transformation as the resampling path (checked by a test), exact, so the noise
        keeps its level and its pixel-to-pixel independence. Pixels a shift brings in from
        outside the frame get background plus noise.
        """
        out = images.clone()
        b, _, h, w = images.shape
        dx, dy = (-shift[:, 0]).round().long(), (-shift[:, 1]).round().long()
        if bool((dx != 0).any() or (dy != 0).any()):
            fill = level.to(images)[:, None, None, None] + sigma.to(images)[
                :, None, None, None] * torch.randn(images.shape, generator=generator).to(images)
            for i in range(b):
                sx, sy = int(dx[i]), int(dy[i])
                rolled = torch.roll(images[i], shifts=(sy, sx), dims=(-2, -1))
                keep = torch.ones(h, w, dtype=torch.bool, device=images.device)
                keep[:max(sy, 0)] = False
                keep[h + min(sy, 0):] = False
                keep[:, :max(sx, 0)] = False
                keep[:, w + min(sx, 0):] = False
                out[i] = torch.where(keep, rolled, fill[i])
        turns = (angle / (math.pi / 2)).round().long() % 4
        for i in range(b):
            img = torch.rot90(out[i], int(turns[i]), dims=(-2, -1))
            out[i] = img.flip(-1) if flip[i] else img
        return out


def make_augment(name: str = "full", **overrides: Any) -> LensAugment:
    """An augmentation from a named set (see ``AUGMENTATION_SETS``), with field overrides."""
    if name not in AUGMENTATION_SETS:
        raise ValueError(f"unknown augmentation set {name!r}; known: {sorted(AUGMENTATION_SETS)}")
    return LensAugment(AUGMENTATION_SETS[name], **overrides)


class TwoViews:
    """Two independently augmented views of the same images, for contrastive training."""

    def __init__(self, augment: LensAugment) -> None:
        self.augment = augment

    def __call__(
        self, images: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        return self.augment(images, generator), self.augment(images, generator)


def local_patch_swap(
    images: Tensor, generator: torch.Generator | None = None, patch_frac: float = 0.125
) -> Tensor:
    """Pseudo-anomalies made from normal images, for label-free model selection only.

    The opposite of everything else in this file: it breaks a lens locally. A square patch of
    side ``patch_frac`` x H is copied from a random place of the same image and pasted over a
    random place in the central half of the frame (where the arcs are), in the spirit of
    CutPaste (Li et al. 2021). Brightness and noise statistics stay those of the image; only
    local structure changes, as substructure changes arcs locally. No anomaly data are used.
    """
    b, _, h, w = images.shape
    s = max(2, round(patch_frac * min(h, w)))
    out = images.clone()
    sy = torch.randint(0, h - s + 1, (b,), generator=generator)
    sx = torch.randint(0, w - s + 1, (b,), generator=generator)
    lo_y, lo_x = h // 4, w // 4
    dy = torch.randint(lo_y, max(lo_y + 1, 3 * h // 4 - s + 1), (b,), generator=generator)
    dx = torch.randint(lo_x, max(lo_x + 1, 3 * w // 4 - s + 1), (b,), generator=generator)
    for i in range(b):
        patch = images[i, :, sy[i]:sy[i] + s, sx[i]:sx[i] + s]
        out[i, :, dy[i]:dy[i] + s, dx[i]:dx[i] + s] = patch
    return out

