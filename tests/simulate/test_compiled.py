"""The compiled path of the simulator: deterministic, batch-independent, right, and optional.

Compiling costs seconds per graph, so these tests share a few graphs (the 32x32 demo preset's
cdm, smooth and vortex renders and its noise) and keep the images small.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from darklens.simulate import backend as sim_backend
from darklens.simulate import compiled, observation, render
from darklens.simulate.parameters import draw_parameters
from darklens.simulate.presets import get_preset
from darklens.simulate.render import render_noiseless
from darklens.simulate.simulator import simulate_batch, simulate_dataset
from darklens.simulate.views import render_views
from lenstronomy_grid import lenstronomy_image_data

PRESET = get_preset("demo", {"n_pix": "32"})



# every other part of the compiled renderer in one image: truncated-NFW subhalos, a vortex
# as a chain of point masses, Sersic lens light, 2x2 supersampling, and per-pixel noise
KITCHEN_SINK = get_preset(
    "model-a",
    {"n_pix": "24", "pixel_scale": "0.1", "cdm_profile": "tnfw", "cdm_count": "6",
     "cdm_mass_kind": "powerlaw", "cdm_mass_min": "1e9", "cdm_mass_max": "1e10"},
)


@pytest.fixture
def needs_compiler() -> None:
    if not sim_backend.compiled_available():
        pytest.skip(f"the compiled simulator is unavailable here: {sim_backend._state['error']}")


def test_compiled_images_do_not_depend_on_the_batch_split(needs_compiler):
    whole, meta = simulate_batch(PRESET, "cdm", np.arange(12), seed=7, backend="compiled")
    parts = [
        simulate_batch(PRESET, "cdm", np.arange(a, b), seed=7, backend="compiled")[0]
        for a, b in ((0, 5), (5, 12))
    ]
    assert torch.equal(whole, torch.cat(parts))
    single, single_meta = simulate_batch(PRESET, "cdm", np.array([9]), seed=7, backend="compiled")
    assert torch.equal(single[0], whole[9])  # a batch of one runs the same code
    assert single_meta["substructure_chi2"][0] == meta["substructure_chi2"][9]
    again, _ = simulate_batch(PRESET, "cdm", np.arange(12), seed=7, backend="compiled")
    assert torch.equal(again, whole)  # and again, after other batch sizes


@pytest.mark.parametrize("cls", ["no_sub", "cdm", "vortex"])
def test_compiled_agrees_with_eager_to_float_rounding(cls, needs_compiler):
    idx = np.arange(6)
    fast, fast_meta = simulate_batch(PRESET, cls, idx, seed=3, backend="compiled")
    slow, slow_meta = simulate_batch(PRESET, cls, idx, seed=3, backend="eager")
    assert fast.dtype == torch.float32 and fast.shape == slow.shape
    assert float((fast - slow).abs().max()) < 1e-5  # min-max scaled images in [0, 1]
    for col in ("snr", "substructure_chi2", "noise_sigma"):
        np.testing.assert_allclose(fast_meta[col], slow_meta[col], rtol=1e-4, err_msg=col)
    # the noiseless render against the float64 reference
    p = draw_parameters(PRESET, cls, torch.as_tensor(idx), seed=3)
    ref = render_noiseless(PRESET, p, dtype=torch.float64)
    got = render_noiseless(PRESET, p, backend="compiled")
    assert float((got.double() - ref).abs().max() / ref.abs().max()) < 1e-5


def test_compiled_render_matches_lenstronomy(needs_compiler):
    """SIE + shear + point-mass subhalos + Sersic source, 2x2 supersampled, through the PSF,
    against lenstronomy (given the same PSF kernel)."""
    pytest.importorskip("lenstronomy")
    from lenstronomy.Data.psf import PSF
    from lenstronomy.ImSim.image_model import ImageModel
    from lenstronomy.LensModel.lens_model import LensModel
    from lenstronomy.LightModel.light_model import LightModel
    from lenstronomy.Util import param_util

    n, pix = PRESET.n_pix, PRESET.pixel_scale
    p = draw_parameters(PRESET, "cdm", torch.arange(3), seed=1)
    ours = render_noiseless(PRESET, p, backend="compiled").double().numpy()
    taps = render._psf_taps(PRESET, p, torch.float64).numpy()
    data = lenstronomy_image_data(n, pix)
    v = {k: t.numpy() for k, t in p.items()}
    for i in range(3):
        subs = np.flatnonzero(v["sub_mask"][i])
        assert subs.size > 0
        model = ImageModel(
            data,
            PSF(psf_type="PIXEL", kernel_point_source=np.outer(taps[i], taps[i])),
            lens_model_class=LensModel(["SIE", "SHEAR"] + ["POINT_MASS"] * subs.size),
            source_model_class=LightModel(["SERSIC_ELLIPSE"]),
            kwargs_numerics={"supersampling_factor": PRESET.supersample},
        )
        e1, e2 = param_util.phi_q2_ellipticity(v["lens_phi"][i], v["lens_q"][i])
        g = v["shear_gamma"][i]
        kw_lens = [
            {"theta_E": v["theta_e"][i], "e1": e1, "e2": e2,
             "center_x": v["lens_center_x"][i], "center_y": v["lens_center_y"][i]},
            {"gamma1": g * np.cos(2 * v["shear_angle"][i]),
             "gamma2": g * np.sin(2 * v["shear_angle"][i])},
        ] + [
            {"theta_E": v["sub_theta_e"][i, s], "center_x": v["sub_x"][i, s],
             "center_y": v["sub_y"][i, s]}
            for s in subs
        ]
        se1, se2 = param_util.phi_q2_ellipticity(v["source_phi"][i], v["source_q"][i])
        kw_src = [{"amp": v["source_amp"][i], "R_sersic": v["source_r_eff"][i],
                   "n_sersic": v["source_n"][i], "e1": se1, "e2": se2,
                   "center_x": v["source_x"][i], "center_y": v["source_y"][i]}]
        ref = model.image(kw_lens, kw_src)
        # float32 against float64: far inside the 1e-3
        np.testing.assert_allclose(ours[i], ref, rtol=0, atol=1e-5 * ref.max())


def test_compiled_tnfw_points_vortex_lens_light_and_counts_noise(needs_compiler):
    idx = torch.arange(4)
    p = draw_parameters(KITCHEN_SINK, "cdm", idx, seed=2)
    vortex = draw_parameters(KITCHEN_SINK, "vortex", idx, seed=2)
    p.update({k: v for k, v in vortex.items() if k.startswith("vortex_")})
    assert bool(p["sub_mask"].any()) and bool((p["vortex_theta_e"] > 0).all())
    ref = render_noiseless(KITCHEN_SINK, p, dtype=torch.float64)
    got = render_noiseless(KITCHEN_SINK, p, backend="compiled")
    assert float((got.double() - ref).abs().max() / ref.abs().max()) < 1e-5
    no_sub = render_noiseless(KITCHEN_SINK, p, substructure=False, dtype=torch.float64)
    assert float((ref - no_sub).abs().max() / ref.abs().max()) > 1e-3  # substructure shows
    sigma = observation.noise_sigma(KITCHEN_SINK, p, got)
    assert sigma.shape == got.shape  # counts noise: per pixel
    fast = observation.observe(KITCHEN_SINK, got, sigma, 2, "cdm", idx, backend="compiled")
    slow = observation.observe(KITCHEN_SINK, got, sigma, 2, "cdm", idx, backend="eager")
    assert float((fast - slow).abs().max()) < 1e-5


def test_views_and_data_sets_record_and_share_the_compiled_path(monkeypatch, needs_compiler):
    monkeypatch.setenv(sim_backend.ENV_VAR, "compiled")
    idx = np.array([0, 3])
    views = render_views(PRESET, "cdm", idx, seed=11, n_views=2)
    images, _ = simulate_batch(PRESET, "cdm", idx, 11)
    assert torch.equal(views[:, 0], images[:, 0])  # view 0 is the data set's image
    data = simulate_dataset(PRESET, 2, seed=0, classes=("no_sub",))
    assert data.attrs["simulator_backend"] == "compiled"
    monkeypatch.setenv(sim_backend.ENV_VAR, "eager")
    assert simulate_dataset(PRESET, 2, seed=0, classes=("no_sub",)).attrs[
        "simulator_backend"
    ] == "eager"


def test_float64_always_renders_eager(monkeypatch):
    monkeypatch.setenv(sim_backend.ENV_VAR, "compiled")
    monkeypatch.setattr(sim_backend, "compiled_available", lambda: True)

    def no_compiling(*args, **kwargs):
        raise AssertionError("float64 must not compile")

    monkeypatch.setattr(compiled, "render", no_compiling)
    p = draw_parameters(PRESET, "cdm", torch.arange(2), seed=0)
    assert render_noiseless(PRESET, p, dtype=torch.float64).dtype == torch.float64


def test_auto_falls_back_to_eager_when_compiling_fails(monkeypatch):
    """A broken compiler: ``auto`` warns once and renders eager; ``compiled`` raises."""
    monkeypatch.setattr(sim_backend, "_state", {"probe": True, "error": None})
    monkeypatch.setattr(compiled, "_graphs", {})

    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(torch, "compile", broken)
    preset = PRESET
    with pytest.raises(RuntimeError, match="no C\\+\\+ compiler"):
        simulate_batch(preset, "cdm", np.arange(2), seed=0, backend="compiled")
    with pytest.warns(UserWarning, match="compiled simulator disabled"):
        img, _ = simulate_batch(preset, "cdm", np.arange(2), seed=0, backend="auto")
    eager, _ = simulate_batch(preset, "cdm", np.arange(2), seed=0, backend="eager")
    assert torch.equal(img, eager)
    assert sim_backend.resolve_backend("auto") == "eager"
    monkeypatch.setenv(sim_backend.ENV_VAR, "auto")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning: the process now renders eager
        data = simulate_dataset(preset, 1, seed=0, classes=("cdm",))
    assert data.attrs["simulator_backend"] == "eager"
    with pytest.raises(RuntimeError, match="unavailable"):
        sim_backend.resolve_backend("compiled")


def test_no_compiler_means_eager(monkeypatch):
    monkeypatch.setattr(sim_backend, "_state", {"probe": None, "error": None})
    monkeypatch.setattr(sim_backend.shutil, "which", lambda name: None)
    assert not sim_backend.compiled_available()
    assert sim_backend.resolve_backend("auto") == "eager"
    with pytest.raises(RuntimeError, match="no C\\+\\+ compiler"):
        sim_backend.resolve_backend("compiled")
    img, _ = simulate_batch(PRESET, "no_sub", np.arange(2), seed=0, backend="auto")
    assert img.shape == (2, 1, 32, 32)


def test_cli_backend_choice_is_recorded(tmp_path, monkeypatch, capsys):
    from darklens.cli import main
    from darklens.data.formats import load_dataset

    args = ["simulate", "--n-per-class", "2", "--classes", "no_sub", "--set", "n_pix=16"]
    assert main([*args, "--out", str(tmp_path / "a"), "--backend", "eager"]) == 0
    assert "eager renderer" in capsys.readouterr().out
    assert load_dataset(tmp_path / "a").attrs["simulator_backend"] == "eager"
    manifest = json.loads((tmp_path / "a" / "simulation.json").read_text())
    assert manifest["simulator_backend"] == "eager"
    monkeypatch.setattr(sim_backend, "_state", {"probe": False, "error": "no C++ compiler (g++)"})
    assert main([*args, "--out", str(tmp_path / "b"), "--backend", "compiled"]) == 2
    err = capsys.readouterr().err
    assert "compiled simulator is unavailable" in err and "Traceback" not in err


def test_backend_names_are_checked(monkeypatch):
    with pytest.raises(ValueError, match="backend"):
        sim_backend.requested_backend("fast")
    monkeypatch.setenv(sim_backend.ENV_VAR, "EAGER")
    assert sim_backend.resolve_backend() == "eager"


def test_auto_renders_small_jobs_eager(monkeypatch):
    """Under auto, compiling (seconds per process) is skipped for jobs it would not repay."""
    monkeypatch.setenv(sim_backend.ENV_VAR, "auto")
    small, big = sim_backend.AUTO_MIN_IMAGES - 1, sim_backend.AUTO_MIN_IMAGES
    assert sim_backend.backend_for_job(None, small) == "eager"
    assert sim_backend.backend_for_job("auto", small) == "eager"
    assert sim_backend.backend_for_job(None, big) is None  # left to resolve_backend
    assert sim_backend.backend_for_job("compiled", small) == "compiled"  # explicit wins
    data = simulate_dataset(PRESET, 2, seed=0, classes=("no_sub",))
    assert data.attrs["simulator_backend"] == "eager"
    monkeypatch.setenv(sim_backend.ENV_VAR, "compiled")
    assert sim_backend.backend_for_job(None, small) is None  # the environment's choice wins
