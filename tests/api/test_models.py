"""darklens.fit_smooth_lens, darklens.Regressor and darklens.benchmark on tiny data."""

from __future__ import annotations

import numpy as np
import pytest

import darklens as dl


def test_fit_smooth_lens_on_simulated_lenses():
    d = dl.simulate("demo", 2, seed=0, classes=["no_sub"], n_pix=32)
    quick = {"iterations": 2, "start_iterations": 1, "moment_starts": 1, "stages": 1,
             "final_iterations": 1, "psf_starts": []}
    fit = dl.fit_smooth_lens(d, options=quick)
    assert fit.residual.shape == (2, 32, 32) and np.isfinite(fit.residual).all()
    assert fit.model.shape == (2, 32, 32) and fit.chi2_red.shape == (2,)
    pixel = d.attrs["preset"]["pixel_scale"]
    same = dl.fit_smooth_lens(d.images[:1], {"pixel_scale": pixel, "psf_fwhm": 0.1},
                              options=quick)
    assert same.residual.shape == (1, 32, 32)


@pytest.mark.parametrize("args, match", [
    (({"pixel_size": 1},), "unknown key 'pixel_size'"),
    (("pixel_scale=-1",), "pixel_scale must be > 0"),
])
def test_fit_smooth_lens_bad_instrument(args, match):
    with pytest.raises(dl.DarklensError, match=match):
        dl.fit_smooth_lens(np.zeros((1, 32, 32)), *args)


def test_fit_smooth_lens_bad_images_and_options():
    with pytest.raises(dl.DarklensError, match="one-channel"):
        dl.fit_smooth_lens(np.zeros((1, 2, 32, 32)))
    with pytest.raises(dl.DarklensError, match="unknown fit option"):
        dl.fit_smooth_lens(np.zeros((1, 32, 32)), options={"speed": 9})


def test_regressor_fit_predict_save_load(tmp_path):
    d = dl.simulate("demo", 24, seed=0, classes=["cdm"], n_pix=32)
    r = dl.Regressor("n_subhalos", epochs=1, batch_size=8).fit(d)
    mean, sigma = r.predict(d.images[:5], tta=False)
    assert mean.shape == sigma.shape == (5, 1) and (sigma > 0).all()
    assert r.info is not None and r.info["data"]["n_test"] >= 1
    back = dl.Regressor.load(r.save(tmp_path / "reg"))
    np.testing.assert_allclose(back.predict(d.images[:5], tta=False)[0], mean, rtol=1e-6)
    assert back.targets == ["n_subhalos"]


@pytest.mark.parametrize("call, match", [
    (lambda: dl.Regressor("f_sub", wings=2), "unknown regression option"),
    (lambda: dl.Regressor("f_sub").predict(np.zeros((1, 32, 32))), "not trained"),
    (lambda: dl.Regressor([]), "at least one target"),
    (lambda: dl.Regressor("f_sub").fit(np.zeros((3, 32, 32))), "needs a LensData"),
])
def test_regressor_bad_input(call, match):
    with pytest.raises(dl.DarklensError, match=match):
        call()


def test_benchmark_runs_and_resumes(tmp_path):
    r = dl.benchmark(["knn"], tmp_path / "bench", n_per_class=12, verbose=False)
    auroc = r["summary"]["knn"]["auroc"]["all"]["mean"]
    assert 0 <= auroc <= 1
    again = dl.benchmark(["knn"], tmp_path / "bench", n_per_class=12, verbose=False)
    assert again["summary"]["knn"]["auroc"]["all"]["mean"] == auroc
    assert (tmp_path / "bench" / "results.json").exists()
