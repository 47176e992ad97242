"""`darklens score`: conformal p-values against held-out calibration normals hold the FPR.

A cheap detector (kNN on pooled pixels) is trained by `darklens train`, which holds out half of
the normal images as calibration normals; thousands of fresh normal simulations (another seed)
are then scored. The share flagged at 0.01, 0.05 and 0.1 must sit inside a 4-sigma band of the
beta-binomial law that split-conformal p-values give with one fixed calibration set
(``realised_fpr_band``: the binomial error of the test set widened by that of the calibration
set), so the test cannot flake, yet it fails when the calibration scores are not exchangeable
with new normals (e.g. training images, which kNN has in its memory bank: far too many flags).
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from darklens.cli import main
from darklens.data.formats import write_shard
from darklens.evaluate.conformal import realised_fpr_band
from darklens.simulate.simulator import simulate_dataset

N_TRAIN_NORMALS = 1200
N_FRESH = 4000
KNN = '{"features": "pixels", "pixel_size": 16}'


@pytest.fixture(scope="module")
def calibrated_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("conformal")
    write_shard(root / "train" / "shard.h5",
                simulate_dataset("demo", N_TRAIN_NORMALS, seed=0, classes=("no_sub",)))
    write_shard(root / "fresh" / "shard.h5",
                simulate_dataset("demo", N_FRESH, seed=101, classes=("no_sub",)))
    run = root / "run"
    assert main(["train", "--detector", "knn", "--data", str(root / "train"), "--out", str(run),
                 "--config", KNN, "--val-fraction", "0.05", "--test-fraction", "0.05",
                 "--cal-fraction", "0.5", "--no-progress"]) == 0
    return root, run


def _score(run, data, out, *extra: str) -> list[dict[str, str]]:
    assert main(["score", str(run), str(data), "--csv", str(out), *extra]) == 0
    with open(out, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
@pytest.mark.parametrize("fpr", [0.01, 0.05, 0.1])
def test_realised_fpr_on_fresh_normals(calibrated_run, tmp_path, fpr):
    root, run = calibrated_run
    n_cal = json.loads((run / "calibration.json").read_text())["n"]
    assert n_cal == N_TRAIN_NORMALS // 2
    rows = _score(run, root / "fresh", tmp_path / "scores.csv", "--fpr", str(fpr))
    assert len(rows) == N_FRESH and all(r["flag"] == "ok" for r in rows)
    flagged = np.array([int(r["anomalous"]) for r in rows])
    p = np.array([float(r["p_value"]) for r in rows])
    np.testing.assert_array_equal(flagged, p <= fpr)
    low, expected, high = realised_fpr_band(fpr, n_cal, N_FRESH, sigmas=4.0)
    realised = flagged.mean()
    assert low <= realised <= high, (realised, low, expected, high)


@pytest.mark.slow
def test_fdr_columns_and_training_scores_would_fail(calibrated_run, tmp_path):
    root, run = calibrated_run
    rows = _score(run, root / "fresh", tmp_path / "scores.csv", "--fdr", "0.05")
    assert list(rows[0]) == ["source", "class", "score", "p_value", "anomalous", "q_value",
                             "discovery", "flag"]
    q = np.array([float(r["q_value"]) for r in rows])
    p = np.array([float(r["p_value"]) for r in rows])
    assert (q >= p - 1e-12).all() and (q <= 1).all()
    # only normals: BH at 5% finds (almost) nothing
    assert sum(int(r["discovery"]) for r in rows) <= 0.05 * len(rows)
    # the band is tight enough to catch calibration on images the detector has seen: the
    # training normals themselves (in kNN's bank) score low, and far too many fresh normals
    # would be flagged
    calibration = json.loads((run / "calibration.json").read_text())
    from darklens.evaluate.conformal import conformal_p_values
    from darklens.models.persistence import load_run
    from darklens.models.scoring import score_images

    detector = load_run(run)
    bank_scores = score_images(detector, _train_images(root, run))
    fresh = np.array([float(r["score"]) for r in rows])
    wrong = (conformal_p_values(fresh, bank_scores) <= 0.01).mean()
    _, _, high = realised_fpr_band(0.01, len(bank_scores), len(fresh))
    assert wrong > high
    assert calibration["n_not_scored"] == 0


def _train_images(root, run) -> np.ndarray:
    """The normalised images the run trained on (its split minus the calibration normals)."""
    from darklens.data.dataset import Normaliser
    from darklens.data.formats import load_dataset
    from darklens.train.data import detection_data
    from darklens.train.run import calibration_split

    config = json.loads((run / "config.json").read_text())
    sp = config["split"]
    data = load_dataset(root / "train")
    det = detection_data(data, "no_sub", sp["seed"], sp["val_fraction"], sp["test_fraction"])
    train, _ = calibration_split(det.train, sp["n_cal"], sp["seed"])
    return Normaliser.from_dict(config["normaliser"])(data.images[train.indices])


def test_score_without_calibration_warns_and_fdr_stops(tmp_path, capsys):
    from toy_lenses import toy_lensdata

    data = tmp_path / "data"
    write_shard(data / "s.h5", toy_lensdata(20, size=32, seed=0))
    run = tmp_path / "run"
    assert main(["train", "--detector", "knn", "--data", str(data), "--out", str(run),
                 "--cal-fraction", "0", "--no-progress"]) == 0
    assert not (run / "calibration.json").exists()
    capsys.readouterr()
    assert main(["score", str(run), str(data)]) == 0
    printed = capsys.readouterr()
    assert "no calibration scores" in printed.err
    rows = list(csv.DictReader(printed.out.splitlines()))
    assert rows and all(r["p_value"] == "" and r["anomalous"] == "" for r in rows)
    assert main(["score", str(run), str(data), "--fdr", "0.1"]) == 2
    assert "--fdr needs" in capsys.readouterr().err
    assert main(["score", str(run), str(data), "--fpr", "1.5"]) == 2
