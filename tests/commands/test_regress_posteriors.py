"""`darklens regress` with binned and flow posteriors: calibration outputs, predict's draws,
known priors, option spellings, foreign DeepLense folders and bad labels."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from darklens.cli import main
from darklens.data.formats import load_dataset


@pytest.fixture(scope="module")
def axion_dir(tmp_path_factory, simulate_vortices):
    """60 model-iii vortex images at 32x32, as HDF5 shards."""
    return simulate_vortices(tmp_path_factory.mktemp("axion"), 60, 2)


@pytest.fixture(scope="module")
def foreign_dir(axion_dir, tmp_path_factory):
    """The same images as a DeepLense folder whose labels.csv names the axion mass
    ``log10_axion_mass_ev`` and holds nothing else of the simulator's."""
    out = tmp_path_factory.mktemp("foreign")
    data = load_dataset(axion_dir)
    (out / "vortex").mkdir()
    rows = []
    for i, img in enumerate(data.images[:, 0]):
        name = f"lens{i:03d}.npy"
        np.save(out / "vortex" / name, img.astype(np.float32))
        rows.append((f"vortex/{name}", "vortex", repr(float(data.metadata["log10_axion_mass"][i]))))
    _write_labels(out, rows)
    return out


def _write_labels(folder, rows, column="log10_axion_mass_ev"):
    with open(folder / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "class", column])
        w.writerows(rows)


def _copy_with_labels(src, dst, change):
    """A copy of a DeepLense folder whose labels.csv rows are edited by ``change``."""
    (dst / "vortex").mkdir(parents=True)
    for f in (src / "vortex").iterdir():
        (dst / "vortex" / f.name).write_bytes(f.read_bytes())
    with open(src / "labels.csv") as fh:
        rows = list(csv.reader(fh))[1:]
    _write_labels(dst, change(rows))
    return dst


@pytest.mark.parametrize("posterior", ["binned", "flow"])
def test_posterior_train_evaluate_predict(axion_dir, tmp_path, capsys, posterior):
    run = tmp_path / "run"
    assert main(["regress", "train", "--target", "log10_axion_mass", "--data", str(axion_dir),
                 "--out", str(run), "--epochs", "2", "--batch-size", "16",
                 "--posterior", posterior, "--n-bins", "16"]) == 0
    info = json.loads((run / "regression.json").read_text())
    assert info["model"]["posterior"] == posterior
    assert info["model"]["support"] == [[-24.0, -22.0]]  # the preset's prior, exactly
    assert main(["regress", "evaluate", str(run), "--data", str(axion_dir)]) == 0
    m = json.loads((run / "metrics.json").read_text())
    assert m["posterior"] == posterior
    per = m["targets"]["log10_axion_mass"]
    cal = per["calibration"]
    assert 0 <= cal["sbc"]["p_value"] <= 1 and sum(cal["sbc"]["counts"]) == m["n_images"]
    assert 0 <= cal["tarp"]["ecp_68"] <= 1 and len(cal["tarp"]["ecp"]) == len(cal["tarp"]["alpha"])
    assert len(cal["coverage_by_truth"]["n"]) == len(cal["coverage_by_truth"]["edges"]) - 1
    ident = per["identifiability"]
    assert ident["prior_std"] == pytest.approx(2 / math.sqrt(12))
    assert all(c is None or c <= 1 for c in ident["contraction"])
    assert (run / "calibration_log10_axion_mass.png").read_bytes()[:4] == b"\x89PNG"
    # predict: quantiles inside the support, draws saved as a plain .npy
    capsys.readouterr()
    shard = sorted(axion_dir.rglob("*.h5"))[0]
    assert main(["regress", "predict", str(run), str(shard), "--csv", str(tmp_path / "p.csv"),
                 "--samples", str(tmp_path / "draws.npy"), "--n-samples", "64"]) == 0
    draws = np.load(tmp_path / "draws.npy", allow_pickle=False)
    assert draws.shape == (60, 64, 1) and draws.min() >= -24 and draws.max() <= -22
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert -24 <= float(rows[0]["log10_axion_mass_q2_5"]) <= float(
        rows[0]["log10_axion_mass_q97_5"]) <= -22


def test_max_minutes_and_its_old_spelling(axion_dir, tmp_path, capsys):
    assert main(["regress", "train", "--target", "log10_axion_mass", "--data", str(axion_dir),
                 "--out", str(tmp_path / "a"), "--epochs", "1", "--max-minutes", "5"]) == 0
    info = json.loads((tmp_path / "a" / "regression.json").read_text())
    assert info["config"]["max_minutes"] == 5
    capsys.readouterr()
    assert main(["regress", "train", "--target", "log10_axion_mass", "--data", str(axion_dir),
                 "--out", str(tmp_path / "b"), "--epochs", "1", "--time-limit", "4"]) == 0
    assert "--time-limit is deprecated" in capsys.readouterr().err
    assert json.loads((tmp_path / "b" / "regression.json").read_text()
                      )["config"]["max_minutes"] == 4


def test_foreign_folder_trains_evaluates_and_combines(foreign_dir, tmp_path, capsys):
    """A DeepLense folder whose axion-mass column has another name, with its prior given."""
    run = tmp_path / "run"
    assert main(["regress", "train", "--target", "log10_axion_mass_ev", "--data",
                 str(foreign_dir), "--out", str(run), "--epochs", "2", "--batch-size", "16",
                 "--posterior", "binned", "--prior", "uniform:-24:-22"]) == 0
    info = json.loads((run / "regression.json").read_text())
    assert info["training_prior"]["log10_axion_mass_ev"]["prior"] == {
        "kind": "uniform", "low": -24.0, "high": -22.0}
    assert main(["regress", "evaluate", str(run), "--data", str(foreign_dir)]) == 0
    assert "log10_axion_mass_ev" in json.loads((run / "metrics.json").read_text())["targets"]
    capsys.readouterr()
    assert main(["regress", "population", str(run), "--data", str(foreign_dir),
                 "--out", str(tmp_path / "pop.json")]) == 0
    res = json.loads((tmp_path / "pop.json").read_text())
    assert res["target"] == "log10_axion_mass_ev" and res["n_lenses"] == 6  # its test split
    assert res["constrained"] in (True, False)
    lo, hi = res["interval_95"]
    assert -24 <= lo < hi <= -22


def _refused(capsys, argv, out_dir, *phrases):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for p in phrases:
        assert p in err, err
    assert not out_dir.exists()  # nothing half-written


def test_bad_labels_are_one_clear_line(foreign_dir, tmp_path, capsys):
    base = ["regress", "train", "--epochs", "1", "--out"]
    # a target column that does not exist
    _refused(capsys, [*base, str(tmp_path / "r1"), "--target", "log10_axion_mass",
                      "--data", str(foreign_dir)], tmp_path / "r1",
             "no label column log10_axion_mass", "log10_axion_mass_ev")
    # a non-numeric column
    text = _copy_with_labels(foreign_dir, tmp_path / "text",
                             lambda rows: [r[:2] + (["heavy"] if i == 3 else r[2:])
                                           for i, r in enumerate(rows)])
    _refused(capsys, [*base, str(tmp_path / "r2"), "--target", "log10_axion_mass_ev",
                      "--data", str(text)], tmp_path / "r2", "is not numeric", "'heavy'")
    # NaN labels
    nan = _copy_with_labels(foreign_dir, tmp_path / "nan",
                            lambda rows: [r[:2] + (["nan"] if i in (4, 7) else r[2:])
                                          for i, r in enumerate(rows)])
    _refused(capsys, [*base, str(tmp_path / "r3"), "--target", "log10_axion_mass_ev",
                      "--data", str(nan)], tmp_path / "r3", "is NaN for 2 of 60", "lens004")
    # targets outside the prior's support
    _refused(capsys, [*base, str(tmp_path / "r4"), "--target", "log10_axion_mass_ev",
                      "--data", str(foreign_dir), "--prior", "uniform:-23.5:-22"],
             tmp_path / "r4", "outside the prior's support [-23.5, -22]")
    # a bounded posterior needs a bounded prior
    _refused(capsys, [*base, str(tmp_path / "r5"), "--target", "log10_axion_mass_ev",
                      "--data", str(foreign_dir), "--posterior", "flow",
                      "--prior", "gaussian:-23:1"], tmp_path / "r5", "bounded training prior")
