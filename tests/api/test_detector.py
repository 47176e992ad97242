"""darklens.Detector: fit, score, save, load; numpy and torch in, numpy out; the CLI's runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import darklens as dl
from darklens.cli import main


def test_fit_scores_numpy_and_torch_alike(trained, small_data):
    test = small_data.select(trained.split.test)
    scores = trained.score(test)
    assert scores.shape == (len(test),) and scores.dtype == np.float64
    assert np.isfinite(scores).all()
    np.testing.assert_array_equal(trained.score(torch.from_numpy(test.images)), scores)
    np.testing.assert_array_equal(trained.score(test.images[:, 0]), scores)  # (N, H, W)
    assert trained.score(test.images[0, 0]).shape == (1,)  # one (H, W) image


def test_split_holds_out_the_test_images(trained, small_data):
    split = trained.split
    assert not set(split.train) & set(split.test)
    assert (small_data.labels[split.train] == 0).all()  # trains on no_sub only
    assert trained.result.epochs_run == 1


def test_same_seed_same_scores(small_data):
    a = dl.create_detector("dcae", latent_dim=8).fit(small_data, epochs=1, seed=4)
    b = dl.create_detector("dcae", latent_dim=8).fit(small_data, epochs=1, seed=4)
    np.testing.assert_array_equal(a.score(small_data), b.score(small_data))


def test_bare_images_all_count_as_normal(small_data):
    normals = small_data.of_class("no_sub").images
    m = dl.create_detector("knn").fit(normals, cal_fraction=0)
    assert m.score(small_data).shape == (len(small_data),)


def test_save_load_round_trip_and_the_cli_reads_it(trained, small_data, tmp_path, capsys):
    run = trained.save(tmp_path / "run")
    back = dl.Detector.load(run)
    np.testing.assert_array_equal(back.score(small_data), trained.score(small_data))
    with pytest.raises(dl.DarklensError, match="not an empty directory"):
        trained.save(run)
    np.save(tmp_path / "one.npy", small_data.images[0, 0])
    assert main(["score", str(run), str(tmp_path / "one.npy")]) == 0
    line = capsys.readouterr().out.splitlines()[1].split(",")
    assert float(line[2]) == pytest.approx(trained.score(small_data.images[0])[0], rel=1e-6)


def test_loads_a_run_of_darklens_train(small_data, tmp_path):
    from darklens.data.deeplense import write_deeplense_folder

    write_deeplense_folder(tmp_path / "data", small_data)
    assert main(["train", "--detector", "knn", "--data", str(tmp_path / "data"), "--out",
                 str(tmp_path / "run"), "--no-progress"]) == 0
    m = dl.Detector.load(tmp_path / "run")
    assert m.name == "knn" and m.score(small_data).shape == (len(small_data),)


@pytest.mark.parametrize("call, match", [
    (lambda d: dl.create_detector("nope"), "unknown detector 'nope'"),
    (lambda d: dl.create_detector("dcae").score(d.images), "not trained"),
    (lambda d: dl.create_detector("dcae").fit(d, epochs=1, warp=3), "unknown training option"),
    (lambda d: dl.create_detector("dcae", depth=3).fit(d, epochs=1), "bad options for detector"),
    (lambda d: dl.create_detector("dcae").fit(d, normal="axion"), "unknown normal class"),
    (lambda d: dl.Detector.load("/nonexistent/run"), "no such run directory"),
])
def test_bad_input_is_a_one_line_error(call, match, small_data):
    with pytest.raises(dl.DarklensError, match=match) as err:
        call(small_data)
    assert "\n" not in str(err.value)


def test_score_checks_the_image_size(trained):
    with pytest.raises(dl.DarklensError, match="trained on"):
        trained.score(np.zeros((2, 1, 64, 64), dtype=np.float32))
    with pytest.raises(dl.DarklensError, match="expected"):
        trained.score(np.zeros((2, 1, 1, 32, 32)))


def test_darklens_evaluate_scores_the_held_out_split_of_a_python_run(tmp_path):
    from sklearn.metrics import roc_auc_score

    assert main(["simulate", "--preset", "demo", "--n-per-class", "12", "--set", "n_pix=32",
                 "--out", str(tmp_path / "data")]) == 0
    data = dl.load(tmp_path / "data")
    m = dl.create_detector("knn").fit(data, test_fraction=0.2)
    run = m.save(tmp_path / "run")
    assert main(["evaluate", str(run), "--data", str(tmp_path / "data")]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    test = data.select(m.split.test)
    assert metrics["test_set"]["n"] == len(test)
    expected = roc_auc_score(test.labels != 0, m.score(test))
    assert metrics["auroc"]["all"] == pytest.approx(expected)
