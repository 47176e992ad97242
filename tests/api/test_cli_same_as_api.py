"""The CLI and the API are one implementation: `darklens train`/`score` and
``Detector.fit``/``load``/``score`` give the same runs and the same scores."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

import darklens as dl
from darklens.cli import main


@pytest.fixture(scope="module")
def folder(small_data, tmp_path_factory):
    from darklens.data.deeplense import write_deeplense_folder

    path = tmp_path_factory.mktemp("same") / "data"
    write_deeplense_folder(path, small_data)
    return path


@pytest.fixture(scope="module")
def cli_run(folder):
    run = folder.parent / "cli-run"
    assert main(["train", "--detector", "dcae", "--config", '{"latent_dim": 8}', "--data",
                 str(folder), "--out", str(run), "--epochs", "2", "--seed", "3",
                 "--no-progress"]) == 0
    return run


def _cli_scores(run, inputs, out):
    assert main(["score", str(run), str(inputs), "--csv", str(out)]) == 0
    with open(out) as fh:
        rows = list(csv.DictReader(fh))
    return np.array([float(r["score"]) for r in rows]), [r["source"] for r in rows]


def test_cli_scores_equal_the_api_scores_of_the_same_run(cli_run, folder, tmp_path):
    cli, names = _cli_scores(cli_run, folder, tmp_path / "scores.csv")
    data = dl.load(folder)
    assert len(cli) == len(data) and len(set(names)) == len(names)
    api = dl.Detector.load(cli_run).score(data)
    np.testing.assert_allclose(api, cli, rtol=1e-6)  # same images, in the same order
    assert np.ptp(api) > 0  # the scores differ between images: a real comparison


def test_api_fit_trains_the_run_the_cli_trains(cli_run, folder, tmp_path):
    data = dl.load(folder)
    m = dl.create_detector("dcae", latent_dim=8).fit(data, epochs=2, seed=3, test_fraction=0.2)
    np.testing.assert_array_equal(m.score(data), dl.Detector.load(cli_run).score(data))
    py_run = m.save(tmp_path / "py-run")
    cli_cfg = json.loads((cli_run / "config.json").read_text())
    py_cfg = json.loads((py_run / "config.json").read_text())
    for key in ("split", "normaliser", "normal", "seed", "input", "views"):
        assert py_cfg[key] == cli_cfg[key], key
    assert py_cfg["data"]["fingerprint"] == cli_cfg["data"]["fingerprint"]
    cal = [json.loads((r / "calibration.json").read_text()) for r in (cli_run, py_run)]
    assert cal[0] == cal[1] and cal[0]
    # and `darklens score` reads the Python run as it reads its own
    cli, _ = _cli_scores(py_run, folder, tmp_path / "py.csv")
    np.testing.assert_allclose(cli, m.score(data), rtol=1e-6)
