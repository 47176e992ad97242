"""Each statistic of the residual-chi2 detector does its own job: the parameter statistic sees
a lens population shift that leaves no residual, the local statistic a clump that the smooth
model cannot absorb."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from darklens.fit.instrument import from_preset
from darklens.models.base import create_detector
from darklens.simulate.presets import get_preset
from darklens.simulate.simulator import simulate_dataset

SMALL = {"n_pix": "32", "pixel_scale": "0.16", "supersample": "1"}


@pytest.fixture(scope="module")
def fitted():
    preset = get_preset("demo", SMALL)
    torch.manual_seed(0)
    det = create_detector("residual-chi2", image_size=32, instrument=from_preset(preset).to_dict(),
                          prior=preset.to_dict(), guess_images=600, guess_epochs=4,
                          calibration_images=40, fit_options={"iterations": 12})
    det.fit_start([torch.as_tensor(simulate_dataset(preset, 40, 1, ("no_sub",)).images)])
    normal = simulate_dataset(preset, 16, 2, ("no_sub",)).images
    heavier = simulate_dataset(get_preset("demo", {**SMALL, "theta_e": "1.32"}), 16, 3,
                               ("no_sub",)).images
    clump = normal.copy()
    yy, xx = np.mgrid[0:32, 0:32]
    clump[:, 0] += 0.5 * np.exp(-((xx - 9) ** 2 + (yy - 16) ** 2) / 2.0)  # off the lens
    return det, {"normal": normal, "heavier": heavier, "clump": clump}


def _auroc(det, statistic, normal, anomal):
    det.config["statistic"] = statistic
    s = np.r_[det.score(torch.as_tensor(normal)).numpy(), det.score(torch.as_tensor(anomal))]
    return roc_auc_score(np.r_[np.zeros(len(normal)), np.ones(len(anomal))], s)


def test_params_statistic_sees_a_heavier_lens(fitted):
    det, x = fitted
    assert _auroc(det, "params", x["normal"], x["heavier"]) > 0.9


def test_local_statistic_sees_a_clump_and_combined_keeps_both(fitted):
    det, x = fitted
    assert _auroc(det, "local", x["normal"], x["clump"]) > 0.9
    assert _auroc(det, "combined", x["normal"], x["clump"]) > 0.9
    assert _auroc(det, "combined", x["normal"], x["heavier"]) > 0.9
    assert det.diagnostics()["calibration"]["n_converged"] == 40


def test_perturber_statistic_sees_one_subhalo_on_the_ring():
    preset = get_preset("demo", SMALL)
    one = get_preset("demo", {**SMALL, "cdm_count": "1", "cdm_count_poisson": "false",
                              "cdm_mass_min": "2e10", "cdm_mass_max": "2e10",
                              "cdm_radius": "uniform:1.1:1.3"})
    torch.manual_seed(0)
    det = create_detector("residual-chi2", image_size=32, instrument=from_preset(preset).to_dict(),
                          prior=preset.to_dict(), guess_images=600, guess_epochs=4,
                          calibration_images=24, statistic="perturber", perturber_grid=10,
                          fit_options={"iterations": 12})
    det.fit_start([torch.as_tensor(simulate_dataset(preset, 24, 1, ("no_sub",)).images)])
    normal = simulate_dataset(preset, 12, 2, ("no_sub",)).images
    subhalo = simulate_dataset(one, 12, 3, ("cdm",)).images
    assert _auroc(det, "perturber", normal, subhalo) > 0.85
    assert det.stat_scale[3] != 1.0  # calibrated, since the statistic is in use
