"""`darklens fit DATA --out DIR`: parameters, residual maps and a record of the instrument for
every image of any data set darklens reads; bad input exits 2 with one line; writes are atomic."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from darklens.cli import main
from darklens.commands import fit as fit_command
from darklens.data.formats import write_deeplense_folder, write_shard
from darklens.fit.fitter import SmoothFit
from darklens.simulate.presets import get_preset
from darklens.simulate.simulator import simulate_dataset

SMALL = {"n_pix": "32", "pixel_scale": "0.16", "supersample": "1"}
FAST = ["--iterations", "5", "--no-progress"]
OUTPUTS = ("params.csv", "residuals.h5", "fit.json")


@pytest.fixture(scope="module")
def lenses():
    """One simulated lens of each class (32x32)."""
    return simulate_dataset(get_preset("demo", SMALL), 1, seed=0)


@pytest.fixture(scope="module")
def folder(lenses, tmp_path_factory):
    root = tmp_path_factory.mktemp("deeplense")
    write_deeplense_folder(root, lenses)
    return root


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _no_leftovers(out: Path) -> None:
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS)


def test_fit_a_deeplense_folder(folder, tmp_path, capsys):
    out = tmp_path / "fit"
    assert main(["fit", str(folder), "--out", str(out), *FAST]) == 0
    printed = capsys.readouterr()
    assert printed.out.startswith("fitted 3 image(s) in ") and "median reduced chi2" in printed.out
    _no_leftovers(out)

    rows = _rows(out / "params.csv")
    files = sorted(str(p) for p in folder.rglob("*.npy"))
    assert sorted(r["source"] for r in rows) == files
    assert [r["class"] for r in rows] == ["no_sub", "cdm", "vortex"]
    assert list(rows[0])[:5] == ["source", "class", "converged", "chi2_red", "iterations"]
    params = list(rows[0])[5:]
    assert params == sorted(params) and "theta_e" in params and "psf_fwhm" in params
    assert all(r["converged"] in ("0", "1") and int(r["iterations"]) > 0 for r in rows)

    with h5py.File(out / "residuals.h5", "r") as f:
        assert f["residual"].shape == (3, 32, 32) and f["residual"].dtype == np.float32
        assert f["model"].shape == (3, 32, 32) and f["model"].dtype == np.float32
        assert f["u"].shape[0] == 3 and f["converged"].shape == (3,)
        np.testing.assert_allclose(f["chi2_red"][:], [float(r["chi2_red"]) for r in rows])
        assert json.loads(f.attrs["instrument"])["source"] == "default"
        assert [s.decode() for s in f["source"][:]] == [r["source"] for r in rows]

    record = json.loads((out / "fit.json").read_text())
    assert record["instrument"]["source"] == "default" and record["instrument"]["n_pix"] == 32
    assert record["options"]["iterations"] == 5 and record["n"] == 3
    assert record["data"]["path"] == str(folder.resolve())
    assert record["n_converged"] == sum(r["converged"] == "1" for r in rows)
    assert record["darklens_version"] and record["date"] and record["seconds"] > 0


def test_fit_shards_of_a_preset_use_its_instrument(lenses, tmp_path, capsys):
    write_shard(tmp_path / "data" / "part.h5", lenses)
    out = tmp_path / "fit"
    assert main(["fit", str(tmp_path / "data"), "--out", str(out), "--limit", "1", *FAST]) == 0
    record = json.loads((out / "fit.json").read_text())
    assert record["instrument"]["source"] == "preset"
    assert record["instrument"]["pixel_scale"] == pytest.approx(0.16)
    assert record["n"] == 1 and record["data"]["n_images"] == 3
    rows = _rows(out / "params.csv")
    assert [r["source"] for r in rows] == [f"{tmp_path / 'data'}[0]"]
    _no_leftovers(out)


def test_a_nan_image_is_refused_naming_the_file(folder, tmp_path, capsys):
    data = tmp_path / "nan"
    for p in folder.rglob("*.npy"):
        (data / p.parent.name).mkdir(parents=True, exist_ok=True)
        (data / p.parent.name / p.name).write_bytes(p.read_bytes())
    bad = data / "cdm" / "broken.npy"
    image = np.ones((32, 32), np.float32)
    image[3, 4] = np.nan
    np.save(bad, image, allow_pickle=False)
    capsys.readouterr()
    assert main(["fit", str(data), "--out", str(tmp_path / "fit"), *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("darklens fit: error: ")
    assert str(bad) in err[0] and "NaN" in err[0]
    assert not (tmp_path / "fit").exists()


@pytest.mark.parametrize("text", ["pixel=3", "pixel_scale=-1", "psf_fwhm=wide", "noise"])
def test_a_malformed_instrument_exits_2_with_one_line(folder, tmp_path, capsys, text):
    capsys.readouterr()
    assert main(["fit", str(folder), "--out", str(tmp_path / "fit"), "--instrument", text]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("darklens fit: error: ") and "instrument" in err[0]
    assert "Traceback" not in err[0]


def _fake_fit(failed: set[int]):
    """A stand-in for the fitter (instant): images in ``failed`` did not converge."""
    def fake(images, inst, options=None, progress=False):
        n, size = images.shape[0], images.shape[-1]
        ok = np.array([i not in failed for i in range(n)])
        return SmoothFit(params={"theta_e": np.ones(n), "background": np.zeros(n)},
                         model=np.zeros((n, size, size)), residual=np.ones((n, size, size)),
                         chi2_red=np.where(ok, 1.0, 80.0), converged=ok, u=np.zeros((n, 13)),
                         iterations=np.full(n, 7))
    return fake


def test_images_that_did_not_converge_are_flagged_and_named(tmp_path, capsys, monkeypatch):
    data = tmp_path / "mine"
    data.mkdir()
    for i in range(14):
        np.save(data / f"img{i:02d}.npy", np.full((16, 16), float(i), np.float32))
    monkeypatch.setattr(fit_command, "fit_smooth_lens", _fake_fit(set(range(1, 13))))
    out = tmp_path / "fit"
    assert main(["fit", str(data), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr()
    assert "12 not converged" in printed.out
    err = printed.err.strip().splitlines()
    assert len(err) == 1 and "not fitted: img01.npy, img02.npy" in err[0]
    assert "img10.npy" in err[0] and "img11.npy" not in err[0] and "(+2 more)" in err[0]
    rows = _rows(out / "params.csv")
    assert [r["converged"] for r in rows] == ["1"] + ["0"] * 12 + ["1"]
    assert [r["class"] for r in rows] == [""] * 14
    assert list(rows[0])[5:] == ["background", "theta_e"]
    record = json.loads((out / "fit.json").read_text())
    assert record["n_converged"] == 2 and record["median_chi2_red"] == 1.0


def test_an_interrupted_write_leaves_no_partial_files(tmp_path, capsys, monkeypatch):
    data = tmp_path / "mine"
    data.mkdir()
    for i in range(2):
        np.save(data / f"img{i}.npy", np.ones((16, 16), np.float32))
    monkeypatch.setattr(fit_command, "fit_smooth_lens", _fake_fit(set()))
    out = tmp_path / "fit"
    assert main(["fit", str(data), "--out", str(out), "--no-progress"]) == 0
    _no_leftovers(out)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(h5py.Group, "create_group", interrupted)  # mid-way into residuals.h5
    (out / "residuals.h5").unlink()
    assert main(["fit", str(data), "--out", str(out), "--no-progress"]) == 130
    # the finished set's fit.json went first; no residuals.h5, no hidden temp file
    assert sorted(p.name for p in out.iterdir()) == ["params.csv"]


def test_bad_numbers_exit_2(folder, tmp_path, capsys):
    for flag in ("--limit", "--iterations", "--batch-size"):
        capsys.readouterr()
        assert main(["fit", str(folder), "--out", str(tmp_path / "f"), flag, "0"]) == 2
        assert flag in capsys.readouterr().err


def test_instrument_for_data_says_where_it_came_from(lenses):
    from darklens.fit.instrument import instrument_for_data

    assert instrument_for_data(None, lenses, 32).source == "preset"
    assert instrument_for_data("pixel_scale=0.1", lenses, 32).source == "user"
    assert instrument_for_data(None, object(), 32).source == "default"
    # a preset of another image size is not this data's instrument
    assert instrument_for_data(None, lenses, 48).source == "default"
