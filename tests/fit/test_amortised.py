"""The fitter's initial guess: its targets are the simulator's own parameters (the renderer
reproduces noiseless simulations from them), and a briefly trained network beats the prior."""

from __future__ import annotations

import numpy as np
import torch

from darklens.fit.amortised import generic_prior, targets_from_metadata, train_initial_guess
from darklens.fit.instrument import Instrument, from_preset
from darklens.fit.smooth_model import SmoothRenderer, solve_linear
from darklens.simulate.presets import get_preset
from darklens.simulate.simulator import simulate_dataset


def _max_relative_residual(preset_name: str, overrides: dict) -> float:
    preset = get_preset(preset_name, {**overrides, "noise": "none"})
    data = simulate_dataset(preset, 4, seed=1, classes=("no_sub",))
    inst = from_preset(preset)
    u = targets_from_metadata(data.metadata, inst)
    comps = SmoothRenderer(inst).components(u)
    images = torch.as_tensor(data.images).reshape(4, -1)
    _, model = solve_linear(comps, images, torch.ones_like(images))
    return float((model - images).abs().max() / images.abs().max())


def test_true_parameters_reproduce_the_simulator():
    # same physics, same conventions: the smooth model with the truth is the image
    assert _max_relative_residual("demo", {"n_pix": "32", "pixel_scale": "0.16"}) < 2e-3
    a64 = {"n_pix": "48", "pixel_scale": str(0.05 * 150 / 48)}
    assert _max_relative_residual("model-a", a64) < 2e-3  # with lens light


def test_generic_prior_follows_the_instrument():
    inst = Instrument(n_pix=48, pixel_scale=0.1, psf_fwhm=None, lens_light=False)
    prior = generic_prior(inst)
    assert (prior.n_pix, prior.pixel_scale) == (48, 0.1)
    assert prior.lens_light_amp.low == 0 and prior.lens_light_amp.kind == "fixed"
    assert prior.psf_fwhm.kind == "uniform"


def test_a_short_training_beats_guessing_the_prior_mean():
    preset = get_preset("demo", {"n_pix": "32", "pixel_scale": "0.16", "supersample": "1",
                                 "theta_e": "uniform:0.9:1.5"})
    inst = from_preset(preset)
    torch.manual_seed(0)
    net, errors = train_initial_guess(inst, preset, n_images=1000, epochs=10, seed=0)
    truth = targets_from_metadata(
        simulate_dataset(preset, 200, seed=0, classes=("no_sub",)).metadata, inst)
    spread = float((truth[:, 0] - truth[:, 0].mean()).abs().mean())
    assert errors["theta_e"] < 0.5 * spread
    assert np.isfinite(list(errors.values())).all()
