"""benchmarks/cross_simulator.py: the lenstronomy set loads in darklens with the right labels,
is reproducible image by image, resumes, and its substructure really changes the lensing."""

from __future__ import annotations

import csv
import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("lenstronomy")

from darklens.data.formats import load_dataset  # noqa: E402
from darklens.data.lensdata import CLASSES  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "cross_simulator.py"


def _load_script():
    if "cross_simulator" in sys.modules:  # registered so that pool workers can unpickle tasks
        return sys.modules["cross_simulator"]
    spec = importlib.util.spec_from_file_location("cross_simulator", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["cross_simulator"] = module
    spec.loader.exec_module(module)
    return module


xs = _load_script()
N_TRAIN, N_TEST = 3, 2


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("xsim") / "set"
    xs.make(out, N_TRAIN, N_TEST, seed=7, workers=1, log=lambda _msg: None)
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*.npy")) if not p.name.startswith(".")}


def test_layout_loads_with_darklens(made):
    train = load_dataset(made / "train")
    assert train.images.shape == (N_TRAIN, 1, 64, 64)
    assert (train.labels == CLASSES.index("no_sub")).all()
    test = load_dataset(made / "test")
    assert test.images.shape == (3 * N_TEST, 1, 64, 64)
    for cls in ("no_sub", "cdm", "vortex"):
        assert (test.labels == CLASSES.index(cls)).sum() == N_TEST
    for data in (train, test):
        assert data.images.dtype == np.float32
        assert data.images.min() >= 0.0 and data.images.max() <= 1.0
        # min-max per image: every image spans [0, 1] exactly
        assert np.allclose(data.images.min(axis=(1, 2, 3)), 0.0)
        assert np.allclose(data.images.max(axis=(1, 2, 3)), 1.0)
    raw = np.load(made / "test" / "cdm" / "cdm_000000.npy", allow_pickle=False)
    assert raw.shape == (64, 64) and raw.dtype == np.float32


def test_truth_csv(made):
    with open(made / "truth.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == N_TRAIN + 3 * N_TEST
    assert {r["file"] for r in rows} == set(_files(made))
    for r in rows:
        chi2, snr = float(r["substructure_chi2"]), float(r["snr"])
        assert snr > 0
        if r["class"] == "no_sub":
            assert chi2 == 0.0 and int(r["n_sub"]) == 0
        else:
            assert chi2 > 0
            n_sub = int(r["n_sub"])
            assert n_sub == xs.N_VORTEX_POINTS if r["class"] == "vortex" else n_sub >= 1
            assert len(r["sub_theta_E"].split(";")) == int(r["n_sub"])
    assert (made / "manifest.json").exists()


def test_rerun_is_identical_and_resumes(made, tmp_path):
    again = tmp_path / "again"
    xs.make(again, N_TRAIN, N_TEST, seed=7, workers=2, log=lambda _msg: None)
    assert _files(again) == _files(made)
    assert (again / "truth.csv").read_text() == (made / "truth.csv").read_text()
    # A rerun into the same folder renders nothing and leaves the files as they were.
    before = {p: p.stat().st_mtime_ns for p in again.rglob("*.npy")}
    messages: list[str] = []
    xs.make(again, N_TRAIN, N_TEST, seed=7, workers=1, log=messages.append)
    assert "0 to render" in messages[0]
    assert {p: p.stat().st_mtime_ns for p in again.rglob("*.npy")} == before
    with pytest.raises(SystemExit):
        xs.make(again, N_TRAIN, N_TEST, seed=8, workers=1, log=lambda _msg: None)


def test_vortex_chain_changes_the_lensing():
    params = xs.draw_params(xs.image_rng(0, "test", "vortex", 0), "vortex")
    with_sub = xs.render(params, noise=False)
    without = xs.render(params, noise=False, substructure=False)
    assert with_sub.shape == (64, 64) and with_sub.dtype == np.float64
    assert np.array_equal(xs.render(params), with_sub)  # noiseless rendering is deterministic
    assert np.abs(with_sub - without).max() > 0.01 * with_sub.max()
    # Deflection: far from the chain it is that of one point mass with theta_vortex^2 in total.
    lens = xs._lens_model(xs.N_VORTEX_POINTS)
    kwargs = xs.lens_kwargs(params)
    assert math.isclose(sum(k["theta_E"] ** 2 for k in kwargs[2:]), params["theta_vortex"] ** 2)
    from lenstronomy.LensModel.lens_model import LensModel

    chain = LensModel(["POINT_MASS"] * xs.N_VORTEX_POINTS)
    x, y = 30.0, 0.0
    ax, ay = chain.alpha(x, y, kwargs[2:])
    r = math.hypot(x - np.mean(params["sub_x"]), y - np.mean(params["sub_y"]))
    assert math.isclose(math.hypot(ax, ay), params["theta_vortex"] ** 2 / r, rel_tol=0.01)
    # Near the chain the full model deflects differently from the macro lens alone.
    mx, my = float(np.mean(params["sub_x"])), float(np.mean(params["sub_y"]))
    px, py = mx + 0.05, my + 0.05
    a_full = np.array(lens.alpha(px, py, kwargs))
    a_macro = np.array(xs._lens_model(0).alpha(px, py, kwargs[:2]))
    assert np.linalg.norm(a_full - a_macro) > 0.01


def test_parse_extra():
    extra = xs.parse_extra(["residual-chi2=--instrument pixel_scale=0.08", "knn=--seed 3"])
    assert extra == {"residual-chi2": ["--instrument", "pixel_scale=0.08"],
                     "knn": ["--seed", "3"]}
    with pytest.raises(SystemExit):
        xs.parse_extra(["no-equals-sign"])


def test_score_diagnostics_joins_scores_to_truth(made, tmp_path):
    # A fake `darklens evaluate` output whose score is the S/N: rank correlation exactly 1.
    test = load_dataset(made / "test")
    with open(made / "truth.csv", newline="") as fh:
        snr = {r["file"]: float(r["snr"]) for r in csv.DictReader(fh)}
    lines = ["index,class,score"]
    for i, label in enumerate(test.labels):
        cls = CLASSES[label]
        rank = i - int(np.flatnonzero(test.labels == label)[0])
        lines.append(f"{i},{cls},{snr[f'test/{cls}/{cls}_{rank:06d}.npy']!r}")
    (tmp_path / "test_scores.csv").write_text("\n".join(lines) + "\n")
    diag = xs.score_diagnostics(made, tmp_path)
    assert diag["spearman_score_snr"] == pytest.approx(1.0)
    assert sum(b["n"] for b in diag["auroc_by_chi2"].values()) == 2 * N_TEST


def test_bright_regime_is_the_same_lens_at_a_higher_signal_to_noise():
    assert xs.priors("faint") == xs.PRIORS
    assert xs.priors("bright") != xs.PRIORS
    _, faint = xs.make_image(7, "test", "cdm", 0)
    _, bright = xs.make_image(7, "test", "cdm", 0, regime="bright")
    for key in ("theta_E", "lens_e1", "gamma1", "src_x", "n_sub"):
        assert faint[key] == bright[key]
    assert bright["snr"] > 8 * faint["snr"]
    assert bright["substructure_chi2"] > 50 * faint["substructure_chi2"]


def test_the_manifest_records_the_regime(tmp_path):
    out = tmp_path / "bright"
    xs.make(out, 1, 1, seed=7, workers=1, log=lambda _msg: None, regime="bright")
    import json

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["regime"] == "bright" and manifest["priors"] == xs.priors("bright")
    with pytest.raises(SystemExit):  # the same folder cannot be resumed as another regime
        xs.make(out, 1, 1, seed=7, workers=1, log=lambda _msg: None, regime="faint")
