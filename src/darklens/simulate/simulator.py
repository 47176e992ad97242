"""Simulated lensing images with their metadata: draw, render, observe, in batches.

The three steps are modules of their own: :mod:`darklens.simulate.parameters` (every parameter
of an image from the preset), :mod:`darklens.simulate.render` (noiseless images) and
:mod:`darklens.simulate.observation` (noise and normalisation); this module runs them in
bounded chunks and collects the metadata and provenance of whole data sets.

Image ``i`` of class ``c`` under seed ``s`` is a pure function of ``(preset, s, c, i)`` and of the
rendering path: its random numbers come from :mod:`darklens.simulate.rng`, so it is
byte-identical whatever batch, worker or shard renders it. float32 images render on the
compiled path (:mod:`darklens.simulate.compiled`, fused C++ loops) where a C++ compiler is
found, else eager; the two paths agree to float rounding (about 1e-6 of the peak), not bit for
bit, and every data set records the path it took (``attrs["simulator_backend"]``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from darklens import __version__
from darklens.data.lensdata import CLASSES, LensData
from darklens.simulate.backend import backend_for_job, paths_since, usage
from darklens.simulate.observation import image_power, noise_sigma, observe
from darklens.simulate.parameters import CLASS_IDS, draw_parameters
from darklens.simulate.presets import Preset, get_preset
from darklens.simulate.render import render_noiseless

_MAX_CHUNK_ELEMENTS = 1 << 24


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
    power = image_power(clean)
    sigma = noise_sigma(preset, p, clean, power)
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
            chi2 = image_power(clean.double() - smooth.double()) / var.view(-1)
        else:
            chi2 = ((clean.double() - smooth.double()) ** 2 / var).sum((1, 2))
    elif not want_chi2:
        chi2 = torch.full((b,), float("nan"), dtype=torch.float64)
    rms = torch.sqrt(var.mean((1, 2)))
    meta = _metadata(p, class_name, idx, snr, chi2, rms)
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
    (:func:`darklens.simulate.backend.backend_for_job`).
    """
    preset = get_preset(preset) if isinstance(preset, str) else preset
    backend = backend_for_job(backend, n_per_class * len(classes))
    images, labels, metas = [], [], []
    before = Counter(usage)
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
            "simulator_backend": paths_since(before),
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
