"""`darklens regress population`: a tiny trained run, its recorded training prior, the result
against `darklens.evaluate.population` on the same predictions, and the one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import norm

from darklens.cli import main
from darklens.data.fingerprint import fingerprint
from darklens.data.formats import load_dataset
from darklens.evaluate.hierarchical import infer_mean_scatter, infer_shared
from darklens.evaluate.population import (
    infer_population_mean,
    lens_log_evidence,
    summed_log_evidence,
)
from darklens.evaluate.run_population import prior_std, uninformative_warning
from darklens.models.regression_persistence import (
    load_regression_run,
    predict_images,
    predict_posteriors,
)
from darklens.models.training_prior import TrainingPrior, describe_training_prior, parse_prior

TARGET = "log10_axion_mass"
SMALL = ["--set", "n_pix=32", "--set", "supersample=1"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 1-epoch axion-mass run on 20 model-iii vortex images (32x32), and a population of 10
    vortex lenses sharing one axion mass (10^-23 eV), simulated with another seed."""
    root = tmp_path_factory.mktemp("population")
    train, pop, run = root / "train", root / "pop", root / "run"
    assert main(["simulate", "--preset", "model-iii", "--n-per-class", "20", "--classes",
                 "vortex", "--out", str(train), "--seed", "1", *SMALL]) == 0
    assert main(["simulate", "--preset", "model-iii", "--n-per-class", "10", "--classes",
                 "vortex", "--out", str(pop), "--seed", "7", "--set", "axion_mass=1e-23",
                 *SMALL]) == 0
    assert main(["regress", "train", "--target", TARGET, "--data", str(train), "--out",
                 str(run), "--epochs", "1", "--batch-size", "8"]) == 0
    return {"train": train, "pop": pop, "run": run}


def _direct(run_dir, data_dir, tta=True):
    """Per-lens predictions made directly with the library, for comparison."""
    run = load_regression_run(run_dir)
    mean, sigma = predict_images(run, load_dataset(data_dir).images, tta=tta)
    return mean[:, 0].astype(np.float64), sigma[:, 0].astype(np.float64)


def _densities(run_dir, data_dir, tta=True):
    """Per-lens marginal densities on the run's grid, made directly with the library."""
    run = load_regression_run(run_dir)
    pred = predict_posteriors(run, load_dataset(data_dir).images, tta=tta, n_samples=8)
    return run.grids()[0], pred.density[:, 0]


def test_run_records_the_exact_training_prior(tiny):
    info = json.loads((tiny["run"] / "regression.json").read_text())
    entry = info["training_prior"][TARGET]
    # model-iii draws the axion mass log-uniformly in [1e-24, 1e-22] eV
    assert entry["prior"] == {"kind": "uniform", "low": -24.0, "high": -22.0}
    assert "axion_mass" in entry["source"]


def test_run_records_the_data_fingerprint_detector_runs_record(tiny):
    info = json.loads((tiny["run"] / "regression.json").read_text())
    assert info["data"]["fingerprint"] == fingerprint(load_dataset(tiny["train"]))


def test_population_command_writes_json_consistent_with_the_library(tiny, tmp_path, capsys):
    out = tmp_path / "pop.json"
    capsys.readouterr()
    assert main(["regress", "population", str(tiny["run"]), "--data", str(tiny["pop"]),
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "N lenses   10" in text and "pull" in text and "true mean  -23" in text
    res = json.loads(out.read_text())
    for key in ("target", "model", "n_lenses", "estimate", "sigma", "interval_68",
                "interval_95", "true_mean", "pull", "naive_mean", "naive_sigma", "prior",
                "prior_source", "used", "tta", "ensemble", "warning"):
        assert key in res
    assert res["target"] == TARGET and res["model"] == "mean" and res["n_lenses"] == 10
    assert res["true_mean"] == pytest.approx(-23.0)
    assert res["pull"] == pytest.approx((res["estimate"] + 23.0) / res["sigma"])
    assert res["interval_68"][0] < res["estimate"] < res["interval_68"][1]
    assert not list(tmp_path.glob(".*"))  # atomic write: no temp file left

    # the same numbers as hierarchical.py on the same per-lens densities, the prior the
    # network learned (recorded at training) divided out
    assert res["method"].startswith("importance reweighting")
    assert res["divided_by"].startswith("effective prior: mean posterior")
    grid, dens = _densities(tiny["run"], tiny["pop"])
    info = json.loads((tiny["run"] / "regression.json").read_text())
    effective = TrainingPrior.from_dict(info["effective_prior"][TARGET]["prior"])
    assert np.trapezoid(np.exp(effective.logpdf(grid)), grid) == pytest.approx(1, abs=1e-3)
    ref = infer_mean_scatter(grid, dens, effective).result
    assert res["estimate"] == pytest.approx(ref.mean, abs=1e-6)
    assert res["sigma"] == pytest.approx(ref.std, abs=1e-6)
    # --divide-by training: the nominal prior instead
    assert main(["regress", "population", str(tiny["run"]), "--data", str(tiny["pop"]),
                 "--divide-by", "training", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    prior = TrainingPrior.uniform(-24.0, -22.0)
    ref = infer_mean_scatter(grid, dens, prior).result
    assert res["divided_by"].startswith("preset model-iii prior")
    assert res["estimate"] == pytest.approx(ref.mean, abs=1e-6)
    mu, sd = _direct(tiny["run"], tiny["pop"])
    assert res["naive_mean"] == pytest.approx(np.sum(mu / sd**2) / np.sum(sd**-2), abs=1e-6)
    # Gaussian lenses: close to the closed form of population.py (untruncated population,
    # flat scatter prior), which differs in those two choices only
    closed = infer_population_mean(mu, sd, prior)
    assert abs(res["estimate"] - closed.mean) < 0.5 * closed.std

    # one shared value, no TTA, a given Gaussian prior: again as the library computes it
    assert main(["regress", "population", str(tiny["run"]), "--data", str(tiny["pop"]),
                 "--model", "shared", "--no-tta", "--prior", "gaussian:-23.2:0.5", "--out",
                 str(out)]) == 0
    res = json.loads(out.read_text())
    grid, dens = _densities(tiny["run"], tiny["pop"], tta=False)
    ref = infer_shared(grid, dens, TrainingPrior.gaussian(-23.2, 0.5)).result
    assert res["model"] == "shared" and res["tta"] is False
    assert res["prior"] == {"kind": "gaussian", "mean": -23.2, "std": 0.5}
    assert res["estimate"] == pytest.approx(ref.mean, abs=1e-6)
    assert res["sigma"] == pytest.approx(ref.std, abs=1e-6)


def test_training_data_gives_the_held_out_split_and_old_runs_recompute_the_prior(tiny, capsys):
    capsys.readouterr()
    assert main(["regress", "population", str(tiny["run"]), "--data", str(tiny["train"])]) == 0
    text = capsys.readouterr().out
    split = json.loads((tiny["run"] / "split.json").read_text())
    assert f"N lenses   {len(split['test'])}" in text and "held-out test" in text

    # a run trained before priors were recorded: recomputed from its unchanged training data
    path = tiny["run"] / "regression.json"
    saved = path.read_text()
    try:
        info = json.loads(saved)
        info.pop("training_prior")
        path.write_text(json.dumps(info))
        assert main(["regress", "population", str(tiny["run"]), "--data",
                     str(tiny["pop"])]) == 0
        assert "recomputed from the training data" in capsys.readouterr().out
        info["data"]["source"] = str(tiny["run"] / "gone")
        path.write_text(json.dumps(info))
        assert main(["regress", "population", str(tiny["run"]), "--data",
                     str(tiny["pop"])]) == 2
        err = capsys.readouterr().err
        assert "no training prior" in err and "--prior" in err
    finally:
        path.write_text(saved)


def test_clear_one_line_errors(tiny, tmp_path, capsys):
    detector = tmp_path / "detector"
    detector.mkdir()
    (detector / "config.json").write_text("{}")
    (detector / "weights.pt").write_bytes(b"")
    empty = tmp_path / "empty"
    empty.mkdir()
    cdm = tmp_path / "cdm"
    assert main(["simulate", "--preset", "model-iii", "--n-per-class", "2", "--classes", "cdm",
                 "--out", str(cdm), "--seed", "3", *SMALL]) == 0
    cases = [
        ([str(detector), "--data", str(tiny["pop"])], "detector run"),
        ([str(empty), "--data", str(tiny["pop"])], "not a regression run"),
        ([str(tiny["run"]), "--data", str(tiny["pop"]), "--target", "f_sub"],
         "does not predict f_sub"),
        ([str(tiny["run"]), "--data", str(empty)], "nothing to load"),
        ([str(tiny["run"]), "--data", str(cdm)], "no images of class vortex"),
        ([str(tiny["run"]), "--data", str(tiny["pop"]), "--prior", "flat:1"], "--prior"),
        ([str(tiny["run"]), "--data", str(tiny["pop"]), "--model", "shared", "--scatter",
          "0.1"], "--scatter"),
    ]
    for argv, words in cases:
        capsys.readouterr()
        assert main(["regress", "population", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, err


def test_describe_training_prior():
    preset = {"name": "p", "vortex_length_kind": "axion", "axion_mass": "loguniform:1e-24:1e-22",
              "lens_mass": None, "theta_e": "uniform:1.0:1.4"}
    rng = np.random.default_rng(0)
    axion = describe_training_prior(TARGET, rng.uniform(-24, -22, 50), preset)
    assert axion["prior"] == {"kind": "uniform", "low": -24.0, "high": -22.0}
    assert describe_training_prior("theta_e", rng.uniform(1, 1.4, 50), preset)["prior"] == {
        "kind": "uniform", "low": 1.0, "high": 1.4}
    # values outside the preset's prior (other data mixed in): a histogram instead
    assert describe_training_prior(TARGET, np.r_[rng.uniform(-24, -22, 50), -25.0],
                                   preset)["prior"]["kind"] == "histogram"
    # integer targets: one bin per integer
    counts = describe_training_prior("n_subhalos", rng.poisson(5, 400).astype(float))
    prior = TrainingPrior.from_dict(counts["prior"])
    assert np.allclose(np.diff(prior.edges), 1.0) and prior.edges[0] % 1 == 0.5
    # no spread: no prior, and why
    none = describe_training_prior("theta_e", np.full(20, 1.2))
    assert none["prior"] is None and "distinct" in none["source"]
    assert parse_prior("uniform:-1:2") == TrainingPrior.uniform(-1, 2)


def test_warning_when_the_lenses_are_as_wide_as_the_prior():
    prior = TrainingPrior.uniform(-24.0, -22.0)  # std 2 / sqrt(12) = 0.577
    assert prior_std(prior) == pytest.approx(2 / np.sqrt(12))
    hist = TrainingPrior.from_samples(np.random.default_rng(2).uniform(-24, -22, 20_000))
    assert prior_std(hist) == pytest.approx(2 / np.sqrt(12), rel=0.02)
    assert prior_std(TrainingPrior.gaussian(0, 0.3)) == 0.3
    assert uninformative_warning(np.full(10, 0.2), prior, TARGET) is None
    text = uninformative_warning(np.full(10, 0.55), prior, TARGET)
    assert "learned little about log10_axion_mass" in text


def test_histogram_prior_evidence_matches_numerical_integral():
    rng = np.random.default_rng(1)
    prior = TrainingPrior.from_samples(rng.normal(0.2, 0.8, 5000), bins=30)
    mu, sigma = np.array([0.4, -1.0, 0.9]), np.array([0.3, 0.6, 0.2])
    m, tau = np.array([0.2, 0.5, -0.3]), np.array([0.4, 0.0, 0.15])
    got = lens_log_evidence(mu, sigma, prior, m, tau)
    y = np.linspace(prior.low, prior.high, 400_001)  # a much finer grid than the code's
    for i in range(3):
        for j in (0, 2):
            f = norm.pdf(y, mu[i], sigma[i]) * norm.pdf(y, m[j], tau[j]) / np.exp(prior.logpdf(y))
            assert got[i, j] == pytest.approx(np.log(np.trapezoid(f, y)), abs=1e-5)
        assert got[i, 1] == pytest.approx(norm.logpdf(0.5, mu[i], sigma[i])
                                          - prior.logpdf(0.5), abs=1e-9)
    # summed over lenses in blocks: the same as summing the full array
    assert summed_log_evidence(mu, sigma, prior, m, tau) == pytest.approx(got.sum(axis=0),
                                                                           abs=1e-9)
