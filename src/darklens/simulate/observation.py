"""Observing noiseless images: the noise model and the normalisation (the simulator's third step).

``noise_sigma`` is the noise level of the preset's noise model (per image or per pixel);
``observe`` adds each image's own counter-based noise (stream ``"noise"``) and normalises,
compiled where available, like the renderer.
"""

from __future__ import annotations

import torch
from torch import Tensor

from darklens.simulate import compiled, rng
from darklens.simulate.backend import dispatch
from darklens.simulate.parameters import CLASS_IDS
from darklens.simulate.presets import Preset


def noise_sigma(
    preset: Preset, p: dict[str, Tensor], clean: Tensor, power: Tensor | None = None
) -> Tensor:
    """Noise standard deviation in counts/s: per image (B, 1, 1) or per pixel (B, H, W).

    ``power`` is :func:`image_power` of ``clean`` when the caller has it already.
    """
    if preset.noise == "none":
        return clean.new_zeros((clean.shape[0], 1, 1))
    if preset.noise == "snr":
        power = image_power(clean) if power is None else power
        return (torch.sqrt(power) / p["target_snr"]).to(clean.dtype).view(-1, 1, 1)
    if preset.noise == "counts":
        t = p["exposure_time"].to(clean.dtype).view(-1, 1, 1)
        counts_var = (clean.clamp_min(0) + preset.sky_level) * t
        counts_var = counts_var + (preset.background_rms * t) ** 2
        counts_var = counts_var + preset.read_noise**2 * preset.num_exposures
        return torch.sqrt(counts_var / t**2)
    raise ValueError(f"unknown noise model {preset.noise!r}")


def image_power(images: Tensor) -> Tensor:
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
    return dispatch(
        backend,
        b,
        lambda: compiled.observe(clean, sigma, ka, kb, minmax),
        eager,
        eligible=clean.dtype == torch.float32,
    )
