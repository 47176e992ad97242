"""The PIT recalibration in a regression run: fitted on the validation images by `regress
train`, refitted identically by `regress recalibrate`, applied by predict, evaluate and
population unless `--no-recalibration`, and recorded in metrics.json."""

from __future__ import annotations

import json

import numpy as np
import pytest

from darklens.cli import main
from darklens.data.formats import load_dataset
from darklens.errors import DarklensError
from darklens.evaluate.run_population import population_of_run
from darklens.models.recalibration import RECALIBRATION_JSON
from darklens.models.regression_persistence import (
    load_regression_run,
    predict_posteriors,
    recalibrated,
)
from darklens.train.regression import recalibrate_run

TARGET = "log10_axion_mass"
SMALL = ["--set", "n_pix=32", "--set", "supersample=1"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 1-epoch run on 600 model-iii vortex images (60 validation images: enough for a
    recalibration), a run of the same data without one, and 30 other lenses."""
    root = tmp_path_factory.mktemp("recalibration")
    train, other = root / "train", root / "other"
    assert main(["simulate", "--preset", "model-iii", "--n-per-class", "600", "--classes",
                 "vortex", "--out", str(train), "--seed", "3", *SMALL]) == 0
    assert main(["simulate", "--preset", "model-iii", "--n-per-class", "30", "--classes",
                 "vortex", "--out", str(other), "--seed", "4", *SMALL]) == 0
    common = ["regress", "train", "--target", TARGET, "--data", str(train), "--epochs", "1",
              "--batch-size", "32"]
    assert main([*common, "--out", str(root / "run")]) == 0
    assert main([*common, "--out", str(root / "raw"), "--no-recalibrate"]) == 0
    return {"train": train, "other": other, "run": root / "run", "raw": root / "raw"}


def test_train_fits_and_records_it(run):
    info = json.loads((run["run"] / "regression.json").read_text())
    recal = json.loads((run["run"] / RECALIBRATION_JSON).read_text())
    assert recal["info"]["n_lenses"] == info["data"]["n_val"] == 60
    beta = recal["info"]["beta"][TARGET]
    assert beta["a"] > 0 and beta["b"] > 0 and 0 <= beta["p_uniform"] <= 1
    assert set(info["effective_prior_recalibrated"]) == {TARGET}
    assert not (run["raw"] / RECALIBRATION_JSON).exists()
    raw_info = json.loads((run["raw"] / "regression.json").read_text())
    assert "effective_prior_recalibrated" not in raw_info
    assert raw_info["effective_prior"] == info["effective_prior"]  # same network, same pass


def test_recalibrate_command_refits_the_same_map(run, tmp_path):
    before = (run["run"] / RECALIBRATION_JSON).read_text()
    info_before = json.loads((run["run"] / "regression.json").read_text())
    assert main(["regress", "recalibrate", str(run["run"]), "--data", str(run["train"])]) == 0
    assert (run["run"] / RECALIBRATION_JSON).read_text() == before
    info = json.loads((run["run"] / "regression.json").read_text())
    assert info["effective_prior_recalibrated"] == info_before["effective_prior_recalibrated"]
    with pytest.raises(DarklensError, match="not its training data"):
        recalibrate_run(run["run"], load_dataset(run["other"]))


def test_predictions_are_recalibrated_unless_asked_not_to(run):
    r = load_regression_run(run["run"])
    assert r.recalibration is not None
    images = load_dataset(run["other"]).images
    raw = predict_posteriors(r, images, n_samples=64, recalibrate=False)
    default = predict_posteriors(r, images, n_samples=64)
    manual = recalibrated(raw, r.recalibration, r.grids())
    np.testing.assert_array_equal(default.samples, manual.samples)
    np.testing.assert_allclose(default.mean, manual.mean)
    plain = load_regression_run(run["raw"])
    np.testing.assert_array_equal(
        predict_posteriors(plain, images, n_samples=64).samples, raw.samples)


def test_evaluate_records_both_and_population_uses_the_matching_prior(run, tmp_path):
    assert main(["regress", "evaluate", str(run["run"]), "--data", str(run["other"])]) == 0
    metrics = json.loads((run["run"] / "metrics.json").read_text())
    assert metrics["recalibration"]["kind"] == "pit-recalibration"
    cal = metrics["targets"][TARGET]
    assert {"sbc", "tarp", "coverage_by_truth"} <= set(cal["calibration_raw"])
    assert main(["regress", "evaluate", str(run["run"]), "--data", str(run["other"]),
                 "--no-recalibration"]) == 0
    plain = json.loads((run["run"] / "metrics.json").read_text())
    assert plain["recalibration"] is None and "calibration_raw" not in plain["targets"][TARGET]
    assert plain["targets"][TARGET]["calibration"]["sbc"] == cal["calibration_raw"]["sbc"]
    res = population_of_run(run["run"], run["other"])
    res_raw = population_of_run(run["run"], run["other"], recalibrate=False)
    assert res["recalibrated"] and not res_raw["recalibrated"]
    assert "mean recalibrated posterior" in res["divided_by"]
    assert "mean posterior" in res_raw["divided_by"]
    out = tmp_path / "pop.json"
    assert main(["regress", "population", str(run["run"]), "--data", str(run["other"]),
                 "--no-recalibration", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["estimate"] == pytest.approx(res_raw["estimate"])
