"""`darklens train --input residual`: a learned detector (knn here) trains on the residual maps
of the smooth-lens fit, and `darklens evaluate` / `darklens score` apply the very same
transform, recorded in the run (config.json's ``input``, residual_input.pt).

Everything is tiny: 32x32 lenses, an initial-guess network trained on 200 simulations for one
epoch, and a few Levenberg-Marquardt iterations."""

from __future__ import annotations

import csv
import io
import json
import shutil

import numpy as np
import pytest

from darklens.cli import main
from darklens.data.dataset import Normaliser
from darklens.data.formats import load_dataset, write_shard
from darklens.fit.residual_input import FILE, ResidualInput
from darklens.models.persistence import load_run
from darklens.models.scoring import score_images
from darklens.simulate.presets import get_preset
from darklens.simulate.simulator import simulate_dataset

SMALL = {"n_pix": "32", "pixel_scale": "0.16", "supersample": "1"}
INPUT_OPTIONS = {"guess_images": 200, "guess_epochs": 1,
                 "fit_options": {"iterations": 5, "stages": 1, "start_iterations": 2}}
FAST = ["--detector", "knn", "--config", '{"k": 2}', "--epochs", "1", "--no-progress"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """6 simulated lenses per class (32x32), one shard per class as `darklens simulate` lays
    them out; the shards carry their preset."""
    root = tmp_path_factory.mktemp("lenses")
    data = simulate_dataset(get_preset("demo", SMALL), 6, seed=0)
    for name in data.class_names:
        write_shard(root / name / "shard-00000.h5", data.of_class(name))
    return root


@pytest.fixture(scope="module")
def residual_run(shards, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "knn-residual"
    code = main(["train", "--data", str(shards), "--out", str(run), "--input", "residual",
                 "--input-options", json.dumps(INPUT_OPTIONS), *FAST])
    assert code == 0
    return run


def test_train_evaluate_score_on_residual_maps(shards, residual_run, capsys):
    run = residual_run
    config = json.loads((run / "config.json").read_text())
    rec = config["input"]
    assert rec["kind"] == "residual" and rec["file"] == FILE and (run / FILE).is_file()
    assert rec["guess"] is True and rec["prior"] == "demo" and rec["clip"] == 20.0
    assert rec["instrument"]["source"] == "preset" and rec["instrument"]["n_pix"] == 32
    assert rec["fit_options"] == INPUT_OPTIONS["fit_options"]
    assert rec["guess_images"] == 200 and set(rec["guess_validation_mae"]) >= {"theta_e"}
    n_train, n_val = config["split"]["n_train"], config["split"]["n_val_normal"]
    n_cal = config["split"]["n_cal"]  # calibration normals: held out of the training part
    assert rec["n_fitted"] == n_train + n_cal + n_val and rec["n_not_fitted"] == 0
    assert config["normaliser"]["mode"] == "none"  # the maps are in noise units already
    assert config["data"]["streamed"] is False  # shards are loaded whole for the transform
    original = load_dataset(shards)
    from darklens.data.fingerprint import fingerprint

    assert config["data"]["fingerprint"] == fingerprint(original)  # the original data's

    capsys.readouterr()
    assert main(["evaluate", str(run), "--data", str(shards)]) == 0
    printed = capsys.readouterr()
    assert "held-out test part" in printed.out  # the fingerprint found the training data
    # not a terminal: no bar redraws, only the one line of the scoring stage
    assert "\r" not in printed.err and printed.err.startswith("evaluating: ")
    assert len(printed.err.splitlines()) == 1
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_set"]["n"] == config["split"]["n_test"]
    assert np.isfinite(metrics["auroc"]["all"])

    # `darklens score` transforms exactly as a direct ResidualInput of the run does
    assert main(["score", str(run), str(shards)]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == len(original) and all(r["flag"] == "ok" for r in rows)
    transform = ResidualInput.load(run, rec)
    maps = transform(original.images)
    assert maps.shape == original.images.shape and maps.dtype == np.float32
    assert transform.fitted.all() and np.abs(maps).max() <= 20.0
    assert not np.allclose(maps, Normaliser("minmax")(original.images))
    # score streams its inputs shard by shard, and the fitter's result depends on the batch it
    # fits together: transform each shard as score does
    per_shard = np.concatenate([transform(load_dataset(p).images)
                                for p in sorted(shards.rglob("*.h5"))])
    expected = score_images(load_run(run), Normaliser("none")(per_shard))
    got = np.array([float(r["score"]) for r in rows])
    np.testing.assert_array_equal(got, expected)
    # ... and not as the raw images would have been scored
    raw = score_images(load_run(run), original.images)
    assert not np.allclose(raw, expected)


def test_a_raw_run_records_its_input(shards, tmp_path):
    run = tmp_path / "raw"
    assert main(["train", "--data", str(shards), "--out", str(run), *FAST]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["input"] == {"kind": "raw"} and config["normaliser"]["mode"] == "minmax"
    assert not (run / FILE).exists()


def test_infotheoretic_on_residual_maps_gets_fitted_lens_pseudo_anomalies(shards, tmp_path):
    """The detector's residual defaults (entropy on the backbone, beta 1) unless the config
    sets them; a pseudo-anomaly for each training and validation normal (point masses through
    its fitted lens, refitted): the validation ones choose score and epoch, the training ones
    (never the calibration normals) feed the semi-supervised term; off with
    pseudo_anomalies false."""
    fast = ["--detector", "infotheoretic", "--epochs", "1", "--no-progress", "--batch-size", "4"]
    run = tmp_path / "info"
    assert main(["train", "--data", str(shards), "--out", str(run), "--input", "residual",
                 "--input-options", json.dumps(INPUT_OPTIONS), "--config",
                 '{"beta": 0.5, "bank_size": 16, "select_images": 8}', *fast]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["config"]["entropy_on"] == "backbone"  # the residual default
    assert config["config"]["beta"] == 0.5  # the config wins
    rec = config["pseudo_anomalies"]
    assert rec["kind"] == "fitted lens + point masses"
    assert rec["n_selection"] == config["split"]["n_val_normal"]
    assert rec["n_semi_supervised"] == config["split"]["n_train"]
    det = load_run(run)
    assert det.default_score in det.score_names()

    off = tmp_path / "info-off"
    options = {**INPUT_OPTIONS, "pseudo_anomalies": False}
    assert main(["train", "--data", str(shards), "--out", str(off), "--input", "residual",
                 "--input-options", json.dumps(options), *fast]) == 0
    assert "pseudo_anomalies" not in json.loads((off / "config.json").read_text())


@pytest.mark.parametrize("argv, words", [
    (["--preset", "demo", "--input", "residual"], "--input residual needs --data"),
    (["--input", "residual", "--detector", "residual-chi2"], "fits the smooth lens"),
    (["--input-options", '{"guess_images": 5}'], "needs --input residual"),
    (["--input", "residual", "--input-options", '{"guesses": 5}'], "unknown keys ['guesses']"),
    (["--input", "residual", "--input-options", '{"fit_options": {"iters": 2}}'],
     "unknown keys ['iters']"),
    (["--input", "residual", "--input-options", '{"pseudo_anomalies": 1}'],
     "pseudo_anomalies must be true or false"),
])
def test_bad_input_options_exit_2_with_one_line(shards, tmp_path, capsys, argv, words):
    args = ["train", "--out", str(tmp_path / "run"), "--no-progress"]
    if "--preset" not in argv:
        args += ["--data", str(shards)]
    if "--detector" not in argv:
        args += ["--detector", "knn"]
    capsys.readouterr()
    assert main(args + argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("darklens train: error: ") and words in err[0]
    assert not (tmp_path / "run" / "config.json").exists()


def test_a_corrupt_residual_input_file_fails_evaluate_in_one_line(shards, residual_run,
                                                                  tmp_path, capsys):
    run = tmp_path / "broken"
    shutil.copytree(residual_run, run)
    (run / FILE).write_bytes((run / FILE).read_bytes()[:100])
    capsys.readouterr()
    assert main(["evaluate", str(run), "--data", str(shards)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("darklens evaluate: error: ")
    assert FILE in err[0] and "cannot be loaded safely" in err[0]
    (run / FILE).unlink()
    assert main(["score", str(run), str(shards)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and FILE in err[0] and "missing" in err[0]


def test_unfittable_images_get_zero_maps_and_a_run_without_guess_needs_no_file(tmp_path):
    preset = get_preset("demo", SMALL)
    images = simulate_dataset(preset, 2, seed=3, classes=("no_sub",)).images.copy()
    images[1, 0, 5, 5] = np.nan
    from darklens.fit.instrument import from_preset

    transform = ResidualInput.prepare(from_preset(preset), None, guess_images=0, clip=3.0,
                                      options=INPUT_OPTIONS["fit_options"])
    maps = transform(images)
    assert transform.guess is None and transform.options.moment_starts == 4
    assert transform.fitted.tolist() == [True, False]
    assert np.all(maps[1] == 0) and np.abs(maps[0]).max() <= 3.0 and maps[0].std() > 0.5
    info = transform.save(tmp_path)
    assert "file" not in info and list(tmp_path.iterdir()) == []
    again = ResidualInput.load(tmp_path, json.loads(json.dumps(info)))
    np.testing.assert_array_equal(again(images), maps)
