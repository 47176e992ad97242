"""Images a detector could not score (NaN: residual-chi2 when the smooth-lens fit fails) are
named by `darklens evaluate` and `darklens score`, never silently ranked.

The run is a knn run whose ``score`` is replaced by an instant stand-in that gives the first
image NaN: what is tested is how the commands treat NaN scores, whatever detector gives them
(residual-chi2's own training fits and trains its initial-guess network, minutes on a CPU)."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import torch

from darklens.cli import main
from darklens.data.formats import write_deeplense_folder
from darklens.models.knn import KNN
from darklens.simulate.presets import get_preset
from darklens.simulate.simulator import simulate_dataset

SMALL = {"n_pix": "32", "pixel_scale": "0.16", "supersample": "1"}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("lenses")
    preset = get_preset("demo", SMALL)
    write_deeplense_folder(root / "train", simulate_dataset(preset, 6, seed=0,
                                                            classes=("no_sub",)))
    write_deeplense_folder(root / "test", simulate_dataset(preset, 2, seed=1))
    return root


def _first_not_fitted(self, images: torch.Tensor) -> torch.Tensor:
    """Instant stand-in for a detector's score: the mean pixel, NaN for the first image."""
    s = images.double().mean((1, 2, 3))
    s[0] = float("nan")
    return s


def test_evaluate_and_score_name_images_with_a_nan_score(folders, tmp_path, capsys,
                                                         monkeypatch):
    run = tmp_path / "run"
    assert main(["train", "--detector", "knn", "--data", str(folders / "train"),
                 "--out", str(run), "--no-progress"]) == 0
    monkeypatch.setattr(KNN, "score", _first_not_fitted)
    test = folders / "test"  # 2 images per class, read in class order: no_sub first

    capsys.readouterr()
    assert main(["evaluate", str(run), "--data", str(test)]) == 0
    # not a terminal: the progress bar is one line, "evaluating: 5/5 images ..."
    err = [line for line in capsys.readouterr().err.strip().splitlines()
           if not line.startswith("evaluating:")]
    assert len(err) == 1 and "1 image(s) not scored" in err[0] and "0 (no_sub)" in err[0]
    assert err[0].startswith("darklens evaluate: warning: ")
    m = json.loads((run / "metrics.json").read_text())
    assert m["not_scored"]["n"] == 1 and m["not_scored"]["images"] == [0]
    assert m["not_scored"]["files"][0].endswith("no_sub_000000.npy")
    assert m["n"] == {"no_sub": 1, "cdm": 2, "vortex": 2, "all": 4}
    assert m["test_set"]["n"] == 5 and np.isfinite(m["auroc"]["all"])
    with open(run / "test_scores.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["index"]) for r in rows] == [1, 2, 3, 4, 5]

    assert main(["score", str(run), str(test)]) == 0
    printed = capsys.readouterr()
    # stderr is not a terminal here: the progress bar is one line, "scoring: 6/6 images ..."
    err = [line for line in printed.err.strip().splitlines() if not line.startswith("scoring:")]
    assert len(err) == 1 and "1 image(s) not scored" in err[0] and "no_sub_000000.npy" in err[0]
    rows = list(csv.DictReader(io.StringIO(printed.out)))
    assert list(rows[0]) == ["source", "class", "score", "p_value", "anomalous", "flag"]
    assert rows[0]["score"] == "" and rows[0]["flag"] == "not_fitted"
    assert rows[0]["p_value"] == "" and rows[0]["anomalous"] == ""
    assert all(r["flag"] == "ok" and np.isfinite(float(r["score"])) for r in rows[1:])
    assert len(rows) == 6

    # every image of a run that could fit none: evaluate refuses with one line
    monkeypatch.setattr(KNN, "score",
                        lambda self, images: torch.full((images.shape[0],), float("nan"),
                                                        dtype=torch.float64))
    assert main(["evaluate", str(run), "--data", str(test)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("darklens evaluate: error:") and "no image could be scored" in err[-1]
