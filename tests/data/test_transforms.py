"""Augmentations keep shape, finiteness, seeds, and the measurable class of a lens."""

from __future__ import annotations

import math

import pytest
import torch

from darklens.data.transforms import (
    AUGMENTATION_SETS,
    AugmentConfig,
    LensAugment,
    TwoViews,
    estimate_background,
    make_augment,
)

SIZE = 48


def ring(n: int, radius: float = 12.0, noise: float = 0.02, blob: bool = False,
         seed: int = 0) -> torch.Tensor:
    """Einstein-ring-like images centred in the frame; optionally a bright blob on the ring."""
    g = torch.Generator().manual_seed(seed)
    c = (SIZE - 1) / 2
    y, x = torch.meshgrid(torch.arange(SIZE) - c, torch.arange(SIZE) - c, indexing="ij")
    r = torch.sqrt(x**2 + y**2)
    img = torch.exp(-0.5 * ((r - radius) / 1.5) ** 2).expand(n, 1, SIZE, SIZE).clone()
    if blob:
        ang = torch.rand(n, generator=g) * 2 * math.pi
        bx, by = radius * torch.cos(ang), radius * torch.sin(ang)
        d2 = (x[None] - bx[:, None, None]) ** 2 + (y[None] - by[:, None, None]) ** 2
        img[:, 0] += 0.8 * torch.exp(-0.5 * d2 / 1.2**2)
    return img + noise * torch.randn(img.shape, generator=g)


def radial_profile(images: torch.Tensor, nbins: int = 20) -> torch.Tensor:
    """Mean brightness in annuli of width 1 px about the image centre, (B, nbins)."""
    c = (SIZE - 1) / 2
    y, x = torch.meshgrid(torch.arange(SIZE) - c, torch.arange(SIZE) - c, indexing="ij")
    idx = torch.sqrt(x**2 + y**2).floor().long().flatten()
    keep = idx < nbins
    flat = images.flatten(1)[:, keep]
    sums = torch.zeros(images.shape[0], nbins).index_add_(1, idx[keep], flat)
    counts = torch.bincount(idx[keep], minlength=nbins).float()
    return sums / counts


def ring_asymmetry(images: torch.Tensor, radius: float = 12.0) -> torch.Tensor:
    """Max over the ring annulus minus its median: large when a blob sits on the ring."""
    c = (SIZE - 1) / 2
    y, x = torch.meshgrid(torch.arange(SIZE) - c, torch.arange(SIZE) - c, indexing="ij")
    annulus = ((torch.sqrt(x**2 + y**2) - radius).abs() < 2).flatten()
    vals = images.flatten(1)[:, annulus]
    return vals.max(1).values - vals.median(1).values


@pytest.mark.parametrize("name", sorted(AUGMENTATION_SETS))
def test_shape_finiteness_and_seed(name: str) -> None:
    x = ring(5)
    aug = make_augment(name)
    y1 = aug(x, torch.Generator().manual_seed(3))
    y2 = aug(x, torch.Generator().manual_seed(3))
    assert y1.shape == x.shape and y1.dtype == x.dtype
    assert torch.isfinite(y1).all()
    assert torch.equal(y1, y2)  # a seed fixes every draw
    if name == "none":
        assert torch.equal(y1, x)
    else:
        assert not torch.equal(y1, aug(x, torch.Generator().manual_seed(4)))


def test_two_views_are_independent() -> None:
    x = ring(4)
    v1, v2 = TwoViews(make_augment("full"))(x, torch.Generator().manual_seed(0))
    assert v1.shape == v2.shape == x.shape
    assert not torch.allclose(v1, v2)


def test_right_angles_and_flips_are_exact() -> None:
    x = torch.randn(6, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    y = LensAugment(rotate="right", flip=True, max_shift=0.0)(x, torch.Generator().manual_seed(1))
    for i in range(6):
        candidates = [torch.rot90(img, k, (0, 1)) for img in (x[i, 0], x[i, 0].flip(1))
                      for k in range(4)]
        assert any(torch.allclose(y[i, 0], cand, atol=1e-5) for cand in candidates)


def test_rotation_preserves_radial_profile_and_einstein_radius() -> None:
    x = ring(8, noise=0.0)
    y = LensAugment(rotate="any", flip=True, max_shift=0.0, restore_noise=False)(
        x, torch.Generator().manual_seed(0))
    px, py = radial_profile(x), radial_profile(y)
    assert (px - py).abs().max() < 0.05  # bilinear interpolation error on a 1.5 px wide ring
    assert torch.equal(px.argmax(1), py.argmax(1))


@pytest.mark.parametrize("name", ["geometric", "geometric+noise", "full"])
def test_augmentations_keep_the_class_of_a_lens(name: str) -> None:
    smooth, blobby = ring(16, seed=1), ring(16, blob=True, seed=2)
    aug = make_augment(name)
    g = torch.Generator().manual_seed(5)
    a_smooth, a_blobby = aug(smooth, g), aug(blobby, g)
    # The Einstein radius (peak of the radial profile) moves by at most one annulus...
    assert (radial_profile(a_smooth).argmax(1) - 12).abs().max() <= 1
    assert (radial_profile(a_blobby).argmax(1) - 12).abs().max() <= 1
    # ...and a ring with a blob on it still separates perfectly from a smooth ring.
    assert ring_asymmetry(a_blobby).min() > ring_asymmetry(a_smooth).max()
    assert ring_asymmetry(a_blobby).mean() > 0.7 * ring_asymmetry(blobby).mean()


def test_noise_level_is_kept_by_resampling_and_raised_by_noise_step() -> None:
    g = torch.Generator().manual_seed(0)
    x = 0.1 * torch.randn(64, 1, 32, 32, generator=g)
    level, sigma = estimate_background(x)
    assert sigma.mean().item() == pytest.approx(0.1, rel=0.05)
    assert level.abs().max() < 0.03
    geo = make_augment("geometric")(x, g)
    raw = make_augment("geometric", restore_noise=False)(x, g)
    assert geo.std().item() == pytest.approx(0.1, rel=0.05)
    assert raw.std().item() < 0.09  # interpolation alone smooths the noise
    noisy = LensAugment(AugmentConfig(rotate="none", flip=False, max_shift=0.0,
                                      noise_level=0.5))(x, g)
    assert 0.1 < noisy.std().item() < 0.1 * math.sqrt(1 + 0.5**2) * 1.02


def test_rotated_corners_are_filled_with_background_noise() -> None:
    x = 5.0 + 0.1 * torch.randn(4, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    y = LensAugment(AugmentConfig(rotate="any", flip=False, max_shift=0.0))(
        x, torch.Generator().manual_seed(1))
    corners = y[:, :, :3, :3]  # outside the frame for most angles
    assert corners.mean().item() == pytest.approx(5.0, abs=0.05)  # not zeros
    assert corners.std().item() == pytest.approx(0.1, rel=0.3)  # and not noise-free


def test_bad_configs_are_rejected() -> None:
    with pytest.raises(ValueError):
        AugmentConfig(rotate="sometimes")
    with pytest.raises(ValueError):
        AugmentConfig(brightness=1.5)
    with pytest.raises(ValueError):
        make_augment("zoom")
    with pytest.raises(ValueError):
        make_augment("geometric")(torch.zeros(2, 1, 8, 10))


def test_dihedral_set_is_lossless() -> None:
    """Right angles and flips only: every view is a permutation of the image's pixels."""
    x = ring(6, blob=True, seed=3)
    out = make_augment("dihedral")(x, torch.Generator().manual_seed(0))
    assert torch.equal(out.flatten(1).sort(dim=1).values, x.flatten(1).sort(dim=1).values)
    ways = {tuple(out[i, 0].flatten()[:5].tolist()) for i in range(6)}
    assert len(ways) > 1  # not every image got the identity


def test_noise_set_keeps_geometry_and_adds_bounded_noise() -> None:
    x = ring(8, noise=0.05, seed=4)
    out = make_augment("noise")(x, torch.Generator().manual_seed(1))
    extra = (out - x).flatten(1).std(dim=1)
    _, sigma = estimate_background(x)
    assert (extra <= 1.1 * sigma + 1e-6).all() and extra.max() > 0.2 * sigma.max()
    # No geometry: the ring is where it was.
    assert torch.allclose(radial_profile(out), radial_profile(x), atol=0.05)
