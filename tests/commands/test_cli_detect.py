"""`darklens train`, `evaluate` and `score` end to end on a tiny data set written by the test."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from darklens.cli import main
from darklens.data.formats import write_deeplense_folder
from darklens.data.npy_safe import save_npy
from toy_lenses import toy_lensdata


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    write_deeplense_folder(root / "train", toy_lensdata(80, size=32, seed=0))
    write_deeplense_folder(root / "test", toy_lensdata(30, size=32, seed=50))
    return root


def test_train_evaluate_score_end_to_end(data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--detector", "dcae", "--data", str(data_dir / "train"),
                 "--normal", "no_sub", "--out", str(run), "--epochs", "8", "--batch-size", "16",
                 "--seed", "3", "--no-progress", "--config", '{"latent_dim": 32}',
                 # the toy normals are in [0, 1] already; min-max scaling would dim the ring
                 # under a blob brighter than it (the knn test below uses the default minmax)
                 "--normalise", "none"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["detector"] == "dcae" and config["config"]["latent_dim"] == 32
    assert config["config"]["image_size"] == 32 and config["train"]["epochs"] == 8
    # 70% of 80 normal images, less the 10% (8) held out as calibration normals
    assert config["split"]["n_train"] == 48 and config["split"]["n_cal"] == 8
    calibration = json.loads((run / "calibration.json").read_text())
    assert calibration["n"] == 8 and len(calibration["scores"]) == 8
    for name in ("weights.pt", "normal_stats.json", "calibration.json", "checkpoint.pt",
                 "losses.csv"):
        assert (run / name).is_file(), name

    # same data: the held-out test part of the split (normal 16 + anomaly test shares)
    assert main(["evaluate", str(run), "--data", str(data_dir / "train")]) == 0
    m = json.loads((run / "metrics.json").read_text())
    assert set(m["auroc"]) == {"all", "cdm", "vortex"}
    assert m["n"]["no_sub"] == 16 and "held-out" in m["test_set"]["images"]
    assert m["auroc"]["all"] > 0.9
    # a separate test folder: every image
    assert main(["evaluate", str(run), "--data", str(data_dir / "test")]) == 0
    m2 = json.loads((run / "metrics.json").read_text())
    assert m2["n"] == {"no_sub": 30, "cdm": 30, "vortex": 30, "all": 60}
    assert m2["auroc"]["all"] > 0.9 and m2["tpr_at_fpr_0.01"]["all"] > 0

    one = tmp_path / "one.npy"
    save_npy(one, np.load(next((data_dir / "test" / "cdm").glob("*.npy"))))
    capsys.readouterr()
    assert main(["score", str(run), str(one), str(data_dir / "test")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "source,class,score,p_value,anomalous,flag" and len(lines) == 1 + 1 + 90
    out_csv = tmp_path / "scores.csv"
    assert main(["score", str(run), str(data_dir / "test"), "--csv", str(out_csv)]) == 0
    with open(out_csv) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 90 and all(np.isfinite(float(r["score"])) for r in rows)
    by_class = {c: np.mean([float(r["score"]) for r in rows if r["class"] == c])
                for c in ("no_sub", "cdm")}
    assert by_class["cdm"] > by_class["no_sub"]


def test_knn_and_resume_from_the_command_line(data_dir, tmp_path):
    run = tmp_path / "knn"
    assert main(["train", "--detector", "knn", "--data", str(data_dir / "train"),
                 "--out", str(run), "--no-progress"]) == 0
    assert main(["evaluate", str(run), "--data", str(data_dir / "test")]) == 0
    assert json.loads((run / "metrics.json").read_text())["auroc"]["all"] > 0.9
    # a finished run is not overwritten by accident
    assert main(["train", "--detector", "knn", "--data", str(data_dir / "train"),
                 "--out", str(run), "--no-progress"]) == 2


def test_infotheoretic_reports_r_z_beside_knn(data_dir, tmp_path, capsys):
    run = tmp_path / "info"
    assert main(["train", "--detector", "infotheoretic", "--data", str(data_dir / "train"),
                 "--out", str(run), "--epochs", "2", "--batch-size", "16", "--no-progress",
                 "--config", '{"width": 8, "depth": 3, "feat_dim": 32, "proj_dim": 16, '
                 '"critic": "dot", "beta": 0.1}']) == 0
    with open(run / "losses.csv") as fh:
        header = fh.readline().strip().split(",")
    assert {"infonce_bound", "entropy_bound", "train_loss"} <= set(header)
    capsys.readouterr()
    assert main(["evaluate", str(run), "--data", str(data_dir / "test")]) == 0
    m = json.loads((run / "metrics.json").read_text())
    every = m["every_score"]
    assert {"norm", "knn", "critic"} <= set(every)
    assert set(every["norm"]) == {"all", "cdm", "vortex"}
    assert "every score, AUROC all: norm" in capsys.readouterr().out


def test_simulated_data_give_infotheoretic_physical_pseudo_anomalies(tmp_path, capsys):
    """On data darklens simulated, the validation normals re-rendered with point masses pick
    the epoch (and the score) without labels; config.json and losses.csv say so."""
    data = tmp_path / "sim"
    assert main(["simulate", "--preset", "demo", "--n-per-class", "48", "--classes", "no_sub",
                 "--set", "n_pix=32", "--out", str(data), "--seed", "3"]) == 0
    run = tmp_path / "info"
    capsys.readouterr()
    assert main(["train", "--detector", "infotheoretic", "--data", str(data), "--out", str(run),
                 "--epochs", "2", "--batch-size", "16", "--no-progress", "--config",
                 '{"width": 8, "depth": 3, "feat_dim": 32, "proj_dim": 16}']) == 0
    assert "best label-free selection loss" in capsys.readouterr().out
    config = json.loads((run / "config.json").read_text())
    assert config["pseudo_anomalies"]["kind"] == "physical"
    assert config["pseudo_anomalies"]["n"] == config["split"]["n_val_normal"] > 0
    with open(run / "losses.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 and all(-1 <= float(r["selection_loss"]) <= 0 for r in rows)


def test_user_mistakes_exit_2_with_one_line(data_dir, tmp_path, capsys):
    assert main(["train", "--detector", "nope", "--data", str(data_dir / "train"),
                 "--out", str(tmp_path / "r")]) == 2
    assert "unknown detector" in capsys.readouterr().err
    assert main(["train", "--detector", "dcae", "--data", str(data_dir / "train"),
                 "--out", str(tmp_path / "r"), "--normal", "axion"]) == 2
    assert "normal class" in capsys.readouterr().err
    assert main(["train", "--detector", "dcae", "--data", str(data_dir / "train"),
                 "--out", str(tmp_path / "r"), "--config", "{oops"]) == 2
    assert main(["evaluate", str(tmp_path / "missing"), "--data", str(data_dir / "test")]) == 2
    assert "no such run" in capsys.readouterr().err
    # an image of the wrong size
    run = tmp_path / "knn"
    assert main(["train", "--detector", "knn", "--data", str(data_dir / "train"),
                 "--out", str(run), "--no-progress"]) == 0
    big = tmp_path / "big.npy"
    save_npy(big, np.zeros((48, 48), np.float32))
    capsys.readouterr()
    assert main(["score", str(run), str(big)]) == 2
    assert "trained on" in capsys.readouterr().err
