"""The simulator: reproducibility, metadata, presets, and the physics it composes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from darklens.simulate import rng
from darklens.simulate.parameters import draw_parameters
from darklens.simulate.presets import Prior, get_preset, list_presets, with_overrides
from darklens.simulate.render import render_noiseless
from darklens.simulate.simulator import simulate_batch, simulate_dataset

COLUMNS = (
    "theta_e",
    "n_subhalos",
    "f_sub",
    "vortex_mass",
    "vortex_length",
    "log10_axion_mass",
    "snr",
    "substructure_chi2",
)


def test_same_seed_gives_identical_images_whatever_the_batch_split():
    preset = get_preset("demo")
    whole, meta = simulate_batch(preset, "cdm", np.arange(0, 12), seed=7)
    parts = [
        simulate_batch(preset, "cdm", np.arange(a, b), seed=7)[0] for a, b in ((0, 5), (5, 12))
    ]
    assert torch.equal(whole, torch.cat(parts))
    single, _ = simulate_batch(preset, "cdm", np.array([9]), seed=7)
    assert torch.equal(single[0], whole[9])


def test_different_seeds_and_indices_differ():
    preset = get_preset("demo")
    a, _ = simulate_batch(preset, "no_sub", np.arange(4), seed=1)
    b, _ = simulate_batch(preset, "no_sub", np.arange(4), seed=2)
    assert not torch.equal(a, b)
    assert not torch.equal(a[0], a[1])


def test_counter_rng_is_uniform_and_independent_of_batching():
    idx = torch.arange(200)
    u = rng.uniforms(3, 0, idx, "noise", 500)
    assert 0 < float(u.min()) and float(u.max()) < 1
    assert abs(float(u.mean()) - 0.5) < 0.01 and abs(float(u.var()) - 1 / 12) < 0.005
    assert torch.equal(u[17:18], rng.uniforms(3, 0, idx[17:18], "noise", 500))
    z = rng.normals(3, 0, idx, "noise", 501)
    assert z.shape == (200, 501)
    assert abs(float(z.mean())) < 0.02 and abs(float(z.std()) - 1) < 0.02
    # neighbouring images are uncorrelated
    assert abs(float(torch.corrcoef(z[:2])[0, 1])) < 0.15


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_renders_finite_images_with_metadata(name):
    preset = with_overrides(
        get_preset(name), {"n_pix": "32"} if get_preset(name).n_pix > 64 else {}
    )
    for cls in ("no_sub", "cdm", "vortex"):
        img, meta = simulate_batch(preset, cls, np.arange(3), seed=0)
        assert img.shape == (3, 1, preset.n_pix, preset.n_pix) and img.dtype == torch.float32
        assert torch.isfinite(img).all()
        for col in COLUMNS:
            assert meta[col].shape == (3,), col
        if preset.normalisation == "minmax":
            assert float(img.min()) == 0.0 and float(img.max()) == 1.0


def test_metadata_follows_the_class():
    data = simulate_dataset("demo", 20, seed=3)
    m = data.metadata
    nosub, cdm, vortex = (data.labels == i for i in range(3))
    assert np.all(m["substructure_chi2"][nosub] == 0) and np.all(m["f_sub"][nosub] == 0)
    assert np.all(m["n_subhalos"][nosub] == 0) and np.all(m["vortex_mass"][nosub] == 0)
    assert (
        np.median(m["substructure_chi2"][cdm]) > 10
        and np.median(m["substructure_chi2"][vortex]) > 10
    )
    assert np.all(m["vortex_mass"][vortex] > 0) and np.all(m["vortex_length"][vortex] > 0)
    n = m["n_subhalos"][cdm].astype(int)
    masses = m["subhalo_mass"][cdm]
    assert np.array_equal(np.isfinite(masses).sum(1), n)  # padding is NaN, one mass per subhalo
    assert data.attrs["seed"] == 3 and data.attrs["preset"]["name"] == "demo"


def test_poisson_subhalo_count_has_the_preset_mean():
    preset = get_preset("demo")
    p = draw_parameters(preset, "cdm", torch.arange(2000), seed=0)
    counts = p["n_subhalos"].numpy()
    assert abs(counts.mean() - preset.cdm_count) < 0.3
    assert abs(counts.var() - preset.cdm_count) < 1.5


def test_powerlaw_masses_follow_the_slope():
    preset = with_overrides(get_preset("model-ii"), {})
    p = draw_parameters(preset, "cdm", torch.arange(400), seed=0)
    m = p["sub_mass"].numpy().ravel()
    m = m[np.isfinite(m)]
    assert m.min() >= 1e6 and m.max() <= 1e10
    # dN/dm ~ m^-0.9: the fraction above 1e9 is (1e10^0.1 - 1e9^0.1) / (1e10^0.1 - 1e6^0.1)
    expected = (10**1.0 - 10**0.9) / (10**1.0 - 10**0.6)
    assert abs((m > 1e9).mean() - expected) < 0.03


def test_axion_convention_ties_vortex_length_to_mass():
    p = draw_parameters(get_preset("model-iii"), "vortex", torch.arange(50), seed=0)
    m = 10 ** p["log10_axion_mass"].numpy()
    assert np.all((m >= 1e-24) & (m <= 1e-22))
    np.testing.assert_allclose(p["vortex_length"].numpy(), 2 * 0.06e-22 / (2 * m), rtol=1e-9)


def test_physical_preset_hides_substructure_that_model_ii_shows():
    phys = simulate_dataset("physical", 24, seed=0, classes=("cdm",)).metadata
    ii = simulate_dataset("model-ii", 24, seed=0, classes=("cdm",)).metadata
    assert np.median(phys["f_sub"]) < 0.01 < np.median(ii["f_sub"])
    assert np.median(phys["substructure_chi2"]) * 10 < np.median(ii["substructure_chi2"])


def test_noise_off_reproduces_the_public_noiseless_model_ii():
    preset = with_overrides(get_preset("model-ii"), {"noise": "none", "normalisation": "flux"})
    img, meta = simulate_batch(preset, "no_sub", np.arange(2), seed=0)
    clean = render_noiseless(preset, draw_parameters(preset, "no_sub", torch.arange(2), seed=0))
    assert np.isnan(meta["snr"]).all()
    assert torch.equal(img[:, 0], clean)


def test_prior_parsing_and_bad_overrides():
    assert Prior.parse("uniform:0.5:1").sample(torch.tensor([0.5])).item() == pytest.approx(0.75)
    assert Prior.parse("0.3").kind == "fixed"
    with pytest.raises(ValueError):
        Prior.parse("uniform:1")
    with pytest.raises(KeyError):
        with_overrides(get_preset("demo"), {"no_such_field": "1"})
