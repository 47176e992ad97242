"""`darklens regress train | evaluate | predict` end to end on tiny simulated data sets."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from darklens.cli import main
from darklens.commands.regress import evaluate_run
from darklens.data.formats import load_dataset, write_deeplense_folder, write_shard
from darklens.data.targets import regression_subset
from darklens.errors import DarklensError
from darklens.simulate.presets import get_preset
from darklens.simulate.simulator import simulate_dataset
from darklens.train.regression import RegressionConfig, train_regression

SMALL = {"n_pix": "32", "pixel_scale": "0.12", "supersample": "1", "theta_e": "uniform:1.0:1.4"}
KEYS = ("mae", "rmse", "r2", "bias", "coverage_68", "coverage_95")


@pytest.fixture(scope="module")
def axion_dir(tmp_path_factory, simulate_vortices):
    """40 model-iii vortex images at 32x32, as HDF5 shards (log10_axion_mass is defined)."""
    return simulate_vortices(tmp_path_factory.mktemp("axion"), 40, 1)


def _train(data, out, *extra):
    return main(["regress", "train", "--data", str(data), "--out", str(out), *extra])


def test_train_evaluate_predict(axion_dir, tmp_path, capsys, simulate_vortices):
    run = tmp_path / "run"
    assert _train(axion_dir, run, "--target", "log10_axion_mass", "--epochs", "2",
                  "--ensemble", "2", "--batch-size", "16") == 0
    info = json.loads((run / "regression.json").read_text())
    assert len(info["members"]) == 2 and info["members"][0]["seed"] != info["members"][1]["seed"]
    for k in (0, 1):
        assert (run / f"member-{k}" / "weights.pt").is_file()
        rows = list(csv.DictReader((run / f"member-{k}" / "losses.csv").open()))
        assert [r["epoch"] for r in rows] == ["1", "2"]
        # the one training loop's log: validation NLL and the MAE per target
        assert {"train_loss", "val_loss", "val_mae_log10_axion_mass", "lr"} <= set(rows[0])
    split = json.loads((run / "split.json").read_text())
    assert not set(split["test"]) & (set(split["train"]) | set(split["val"]))
    assert len(split["test"]) == 4

    capsys.readouterr()
    assert main(["regress", "evaluate", str(run), "--data", str(axion_dir)]) == 0
    assert "held-out test split" in capsys.readouterr().out
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n_images"] == 4 and metrics["ensemble"] == 2
    per = metrics["targets"]["log10_axion_mass"]
    for key in KEYS:  # single target: also at the top level
        assert key in per and metrics[key] == per[key]
    assert all(math.isfinite(per[k]) for k in ("mae", "rmse", "bias", "coverage_68"))
    for name in ("pred_vs_truth_log10_axion_mass.png", "residuals_log10_axion_mass.png"):
        assert (run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # predict: a shard and a single .npy image
    data = load_dataset(axion_dir)
    np.save(tmp_path / "one.npy", data.images[0, 0])
    shard = sorted(axion_dir.rglob("*.h5"))[0]
    out_csv = tmp_path / "pred.csv"
    assert main(["regress", "predict", str(run), str(shard), str(tmp_path / "one.npy"),
                 "--csv", str(out_csv)]) == 0
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 41
    quantiles = [f"log10_axion_mass_{q}" for q in ("q2_5", "q16", "q50", "q84", "q97_5")]
    assert set(rows[0]) == {"file", "index", "log10_axion_mass_mean",
                            "log10_axion_mass_sigma", *quantiles}
    assert all(float(r["log10_axion_mass_sigma"]) > 0 for r in rows)
    for r in rows:  # quantiles of the draws, in order
        q = [float(r[c]) for c in quantiles]
        assert q == sorted(q) and q[0] < float(r["log10_axion_mass_mean"]) < q[-1]
    assert rows[-1]["file"].endswith("one.npy")
    # the lone .npy image is image 0 of the data: same prediction
    first = [r for r in rows if r["index"] == "0"][0]
    assert float(rows[-1]["log10_axion_mass_mean"]) == pytest.approx(
        float(first["log10_axion_mass_mean"]), abs=1e-6)
    capsys.readouterr()
    assert main(["regress", "predict", str(run), str(tmp_path / "one.npy"), "--no-tta"]) == 0
    assert capsys.readouterr().out.startswith("file,index,log10_axion_mass_mean")

    # other data (another seed): every usable image is scored
    other = simulate_vortices(tmp_path / "other", 6, 9)
    assert main(["regress", "evaluate", str(run), "--data", str(other), "--no-tta"]) == 0
    assert json.loads((run / "metrics.json").read_text())["n_images"] == 6


def test_resume_matches_uninterrupted_run(axion_dir, tmp_path):
    data = load_dataset(axion_dir)
    cfg = RegressionConfig(targets=["log10_axion_mass"], epochs=3, batch_size=16, seed=4)
    train_regression(data, cfg, tmp_path / "full", log=lambda m: None)

    def interrupt(msg):
        if "epoch 2/3" in msg:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_regression(data, cfg, tmp_path / "cut", log=interrupt)
    assert not (tmp_path / "cut" / "member-0" / "weights.pt").exists()
    with pytest.raises(DarklensError, match="already holds a run"):
        train_regression(data, cfg, tmp_path / "cut", log=lambda m: None)
    train_regression(data, cfg, tmp_path / "cut", resume=True, log=lambda m: None)
    a = torch.load(tmp_path / "full" / "member-0" / "weights.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "member-0" / "weights.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_several_targets_from_labels_csv(tmp_path):
    data = simulate_dataset(get_preset("demo", SMALL), 24, seed=2, classes=("no_sub", "cdm"))
    folder = tmp_path / "deeplense"
    write_deeplense_folder(folder, data)
    assert (folder / "labels.csv").is_file()
    run = tmp_path / "run"
    assert _train(folder, run, "--target", "f_sub,n_subhalos,theta_e", "--epochs", "1",
                  "--batch-size", "8") == 0
    info = json.loads((run / "regression.json").read_text())
    assert info["config"]["classes"] == ["cdm"]  # f_sub and n_subhalos are CDM properties
    assert info["data"]["n_usable"] == 24
    assert main(["regress", "evaluate", str(run), "--data", str(folder)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["targets"]) == {"f_sub", "n_subhalos", "theta_e"}
    assert "mae" not in metrics  # several targets: only per target


def test_axion_target_without_axion_preset_is_a_clear_error(tmp_path, capsys):
    data = simulate_dataset(get_preset("demo", SMALL), 8, seed=0, classes=("vortex",))
    write_shard(tmp_path / "d" / "shard.h5", data)
    assert _train(tmp_path / "d", tmp_path / "run", "--target", "log10_axion_mass") == 2
    err = capsys.readouterr().err
    assert "log10_axion_mass is NaN" in err and "model-iii" in err
    assert _train(tmp_path / "d", tmp_path / "run2", "--target", "no_such_column") == 2
    assert "no label column no_such_column" in capsys.readouterr().err


def test_images_with_nan_targets_are_refused_or_excluded():
    data = simulate_dataset(get_preset("demo", SMALL), 10, seed=0, classes=("no_sub",))
    data.metadata["theta_e"][:3] = np.nan
    with pytest.raises(DarklensError, match=r"theta_e is NaN for 3 of 10 images .*--skip-nan"):
        regression_subset(data, ["theta_e"])
    sub = regression_subset(data, ["theta_e"], skip_nan=True)
    assert len(sub.indices) == 7 and not np.isnan(sub.values).any()
    assert sub.messages == ["excluded 3 of 10 images whose theta_e is NaN"]
    with pytest.raises(DarklensError, match="no common class"):
        regression_subset(data, ["f_sub", "log10_axion_mass"])


def test_a_little_training_on_theta_e_beats_the_mean(tmp_path):
    data = simulate_dataset(get_preset("demo", SMALL), 500, seed=3, classes=("no_sub",))
    cfg = RegressionConfig(targets=["theta_e"], epochs=5, batch_size=32, lr=3e-3, seed=0)
    info = train_regression(data, cfg, tmp_path / "run", log=lambda m: None)
    metrics = evaluate_run(str(tmp_path / "run"), _save(data, tmp_path / "d"), tta=False)
    truth_train = np.asarray(info["target_mean"])[0]  # predicting the training mean
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    baseline = np.mean(np.abs(data.metadata["theta_e"][split["test"]] - truth_train))
    assert metrics["n_images"] == 50
    assert metrics["mae"] < 0.6 * baseline, (metrics["mae"], baseline)


def _save(data, folder):
    write_shard(folder / "shard.h5", data)
    return str(folder)
