"""Pseudo-anomalies from each normal's own fit (darklens.fit.pseudo_anomalies): through the
true lens, exactly the simulator's point-mass lensing; nothing where no mass is added; images
the fit could not take left alone; seeded; and a residual the refit cannot absorb."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import as_tensor

from darklens.fit.amortised import targets_from_metadata
from darklens.fit.fitter import FitOptions, SmoothFit, fit_smooth_lens
from darklens.fit.instrument import from_preset
from darklens.fit.pseudo_anomalies import perturbed_fits, perturbers_for, with_perturbers
from darklens.simulate.parameters import draw_parameters
from darklens.simulate.presets import get_preset
from darklens.simulate.pseudo import _perturbers, point_perturbers
from darklens.simulate.render import render_noiseless
from darklens.simulate.simulator import simulate_dataset

SMALL = {"n_pix": "32", "pixel_scale": "0.16", "supersample": "1", "theta_e": "uniform:1.0:1.3",
         "shear_gamma": "uniform:0:0.05"}
SEED, PSEUDO_SEED = 3, 11


@pytest.fixture(scope="module")
def fitted():
    preset = get_preset("demo", SMALL)
    data = simulate_dataset(preset, 8, seed=SEED, classes=("no_sub",))
    inst = from_preset(preset)
    return preset, data, inst, fit_smooth_lens(data.images, inst, FitOptions(batch_size=8))


def test_perturbers_bend_light_as_the_simulator_does():
    """Through the true smooth lens, the change the perturbers make equals the simulator's own
    rendering of the same point masses in the same lenses (noiseless), pixel for pixel, up to
    the constant between unit-amplitude surface brightness and counts per pixel."""
    preset = get_preset("demo", SMALL)
    p = draw_parameters(preset, "no_sub", torch.arange(6), SEED)
    clean = render_noiseless(preset, p, backend="eager", dtype=torch.float64)
    with_masses = {**p, **_perturbers(p, np.random.default_rng(PSEUDO_SEED), 3, (0.003, 0.1),
                                      (0.6, 1.4))}
    point = dataclasses.replace(preset, cdm_profile="point")
    sim = (render_noiseless(point, with_masses, backend="eager", dtype=torch.float64)
           - clean).reshape(6, -1).numpy()
    meta = {k: v.numpy() for k, v in p.items() if v.dim() == 1}
    inst = from_preset(preset)
    truth = SmoothFit(params={"source_amp": np.ones(6)}, model=np.zeros((6, 32, 32)),
                      residual=np.zeros((6, 32, 32)), chi2_red=np.ones(6),
                      converged=np.ones(6, dtype=bool),
                      u=targets_from_metadata(meta, inst).numpy())
    drawn = point_perturbers(meta["theta_e"], meta["lens_center_x"], meta["lens_center_y"],
                             np.random.default_rng(PSEUDO_SEED))
    ours = with_perturbers(np.zeros((6, 32, 32), np.float32), truth, inst, drawn).reshape(6, -1)
    for a, b in zip(ours, sim, strict=True):
        assert np.abs(b).max() > 0
        np.testing.assert_allclose(a * inst.pixel_scale ** 2, b, rtol=1e-3,
                                   atol=1e-4 * np.abs(b).max())


def test_no_mass_changes_nothing_and_unfitted_images_are_left_alone(fitted):
    _, data, inst, fit = fitted
    none = {k: np.full((len(fit), 2), np.nan) for k in ("theta_e", "x", "y")}
    np.testing.assert_allclose(with_perturbers(data.images, fit, inst, none), data.images,
                               atol=1e-6)
    drawn = perturbers_for(fit, np.random.default_rng(0))
    fit.converged[2] = False
    try:
        moved = with_perturbers(data.images, fit, inst, drawn)
    finally:
        fit.converged[2] = True
    assert np.array_equal(moved[2], data.images[2])
    assert not np.allclose(moved[0], data.images[0])


def test_seeded_and_the_refit_leaves_the_perturbation_in_the_residual(fitted):
    _, data, inst, fit = fitted
    a = perturbed_fits(data.images, fit, inst, np.random.default_rng(5))
    b = perturbed_fits(data.images, fit, inst, np.random.default_rng(5))
    assert np.array_equal(a, b)
    # the broad prior's stronger end (3-10% of theta_E^2), which a refit cannot absorb
    strong = perturbers_for(fit, np.random.default_rng(5), fraction=(0.03, 0.1))
    refit = fit_smooth_lens(with_perturbers(data.images, fit, inst, strong), inst,
                            FitOptions(batch_size=8))

    def local(residual: np.ndarray) -> np.ndarray:
        r2 = as_tensor(residual).square().unsqueeze(1)
        return F.avg_pool2d(r2, 4, stride=2).amax((1, 2, 3)).numpy()

    assert np.median(local(refit.residual)) > 1.5 * np.median(local(fit.residual))
