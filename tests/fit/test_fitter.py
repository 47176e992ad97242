"""The smooth-lens fitter: reaches the noise on smooth lenses, recovers the Einstein radius,
flags what it cannot fit, and parses --instrument strictly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from darklens.errors import DarklensError
from darklens.fit.fitter import FitOptions, fit_smooth_lens
from darklens.fit.instrument import Instrument, from_preset, parse_instrument
from darklens.fit.noise import binned_variance, border_sigma
from darklens.fit.smooth_model import parameter_specs, to_physical, to_unconstrained
from darklens.simulate.presets import get_preset
from darklens.simulate.simulator import simulate_dataset

SMALL = {"n_pix": "32", "pixel_scale": "0.16", "supersample": "1", "theta_e": "uniform:1.0:1.3",
         "shear_gamma": "uniform:0:0.05"}


@pytest.fixture(scope="module")
def small_lenses():
    preset = get_preset("demo", SMALL)
    return preset, simulate_dataset(preset, 6, seed=3, classes=("no_sub", "cdm"))


def test_parameters_round_trip_through_their_bounds():
    inst = Instrument(n_pix=32, pixel_scale=0.1)
    specs = parameter_specs(inst)
    u = torch.randn(5, len(specs))
    back = to_unconstrained(to_physical(u, specs), specs)
    torch.testing.assert_close(back, u, atol=1e-3, rtol=1e-3)
    phys = to_physical(torch.full((1, len(specs)), 30.0), specs)
    assert all(float(phys[s.name]) <= s.hi * (1 + 1e-6) for s in specs)


def test_fit_reaches_the_noise_and_recovers_the_einstein_radius(small_lenses):
    preset, data = small_lenses
    normal = data.of_class("no_sub")
    fit = fit_smooth_lens(normal.images, from_preset(preset), FitOptions(batch_size=8))
    assert fit.converged.all()
    assert 0.8 < np.median(fit.chi2_red) < 1.2
    rel = np.abs(fit.params["theta_e"] / normal.metadata["theta_e"] - 1)
    assert np.median(rel) < 0.03  # 32x32 at 0.16": theta_e trades against shear and q
    assert fit.residual.shape == normal.images[:, 0].shape and np.isfinite(fit.residual).all()


def test_substructure_leaves_a_larger_residual_than_noise(small_lenses):
    preset, data = small_lenses
    fit = fit_smooth_lens(data.images, from_preset(preset), FitOptions(batch_size=12))
    cdm = data.labels == data.class_names.index("cdm")
    strong = cdm & (data.metadata["substructure_chi2"] > 300)
    assert strong.any()
    assert fit.chi2_red[strong].mean() > fit.chi2_red[~cdm].mean()


def test_images_with_nan_are_flagged_not_fitted(small_lenses):
    preset, data = small_lenses
    images = data.images[:3].copy()
    images[1, 0, 5, 5] = np.nan
    fit = fit_smooth_lens(images, from_preset(preset), FitOptions(iterations=3, stages=1))
    assert list(fit.converged) == [True, False, True]
    assert np.isfinite(fit.residual).all() and (fit.residual[1] == 0).all()


def test_wrong_image_size_is_refused():
    with pytest.raises(ValueError, match="do not match"):
        fit_smooth_lens(np.zeros((2, 1, 16, 16), np.float32), Instrument(n_pix=32))


def test_noise_estimates_recover_a_known_variance_model():
    gen = torch.Generator().manual_seed(0)
    light = torch.rand(4, 64 * 64, generator=gen) * 10
    s0, s1 = torch.tensor([0.5, 1.0, 2.0, 1.0]), torch.tensor([0.0, 0.3, 1.0, 2.0])
    sigma = torch.sqrt(s0.view(-1, 1) + s1.view(-1, 1) * light)
    resid = sigma * torch.randn(4, 64 * 64, generator=gen)
    e0, e1 = binned_variance(resid, light)
    torch.testing.assert_close(e0 + 5 * e1, s0 + 5 * s1, rtol=0.1, atol=0.1)
    flat = torch.randn(2, 32 * 32, generator=gen) * 0.2
    _, sig = border_sigma(flat, 32)
    torch.testing.assert_close(sig, torch.full((2,), 0.2), rtol=0.15, atol=0)


def test_instrument_text_is_parsed_strictly():
    inst = parse_instrument("pixel_scale=0.05, psf_fwhm=0.1,lens_light=0", 64)
    assert (inst.pixel_scale, inst.psf_fwhm, inst.lens_light, inst.source) == \
        (0.05, 0.1, False, "user")
    assert parse_instrument("psf_fwhm=fit", 64).psf_fwhm is None
    assert parse_instrument(None, 64).source == "default"
    for bad, why in (("pixel_scale", "not key=value"), ("pixel=0.1", "unknown key"),
                     ("pixel_scale=abc", "bad value"), ("pixel_scale=-1", "must be > 0"),
                     ("lens_light=maybe", "bad value")):
        with pytest.raises(DarklensError, match=why):
            parse_instrument(bad, 64)


def test_preset_instrument_is_exact():
    inst = from_preset(get_preset("model-a"))
    assert (inst.n_pix, inst.pixel_scale, inst.psf_fwhm, inst.supersample, inst.lens_light) == \
        (150, 0.05, 0.2355, 2, True)
    assert from_preset(get_preset("demo")).lens_light is False
    assert Instrument.from_dict(inst.to_dict()) == inst


class _FixedGuess(torch.nn.Module):
    """A stand-in for the guess network: returns given starting points, in order."""

    def __init__(self, u: np.ndarray):
        super().__init__()
        self.u = torch.as_tensor(u, dtype=torch.float32)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.u[: images.shape[0]]


def test_moment_starts_are_fallbacks_only_where_the_guess_fits_poorly(small_lenses):
    preset, data = small_lenses
    inst = from_preset(preset)
    good = fit_smooth_lens(data.images, inst, FitOptions(batch_size=12)).u.copy()
    guess_u = good.copy()
    guess_u[4] = 4.0  # one image's guess near the upper end of every bound: far from its lens
    opts = {"batch_size": 12, "moment_starts": 1, "stages": 1}
    fit = fit_smooth_lens(data.images, inst, FitOptions(**opts), guess=_FixedGuess(guess_u))
    bare = fit_smooth_lens(data.images, inst, FitOptions(**opts, fallback_ratio=float("inf")),
                           guess=_FixedGuess(guess_u))
    others = np.arange(len(good)) != 4
    # the poorly started normal tried the moment start (extra LM iterations); the well started
    # normals did not (strong cdm lenses may: their cost is high from any start)
    tried = fit.iterations != bare.iterations
    normal = data.labels == data.class_names.index("no_sub")
    assert normal[4] and tried[4] and not tried[normal & others].any()
    # and it rescued it: without the fallback, its fit stays worse
    assert fit.chi2_red[4] < bare.chi2_red[4]
    assert fit.chi2_red[4] < 2 * np.median(fit.chi2_red[others])
