"""`darklens sweep`: Optuna on SQLite, label-free by default, resumable, best config trains."""

from __future__ import annotations

import json

import optuna
import pytest

from darklens.cli import main
from darklens.data.formats import write_deeplense_folder
from darklens.errors import DarklensError
from darklens.sweep import parse_param
from toy_lenses import toy_lensdata

TINY = {"width": 4, "depth": 2, "feat_dim": 16, "proj_dim": 8, "bank_size": 64,
        "select_images": 16, "batch_size": 16}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweepdata")
    write_deeplense_folder(root / "d", toy_lensdata(30, size=32, seed=0))
    return root / "d"


def _sweep(data_dir, tmp_path, trials, *extra):
    return main(["sweep", "--detector", "infotheoretic", "--data", str(data_dir),
                 "--param", "beta=loguniform:1e-4:1", "--param", "temperature=uniform:0.05:0.5",
                 "--trials", str(trials), "--storage", f"sqlite:///{tmp_path / 'sweep.db'}",
                 "--epochs", "1", "--config", json.dumps(TINY),
                 "--best-config", str(tmp_path / "best.json"), *extra])


def test_sweep_is_label_free_resumes_and_its_best_config_trains(data_dir, tmp_path, capsys):
    assert _sweep(data_dir, tmp_path, 2) == 0
    out = capsys.readouterr().out
    assert "objective: pseudo_auroc" in out and "label-free" in out
    study = optuna.load_study(study_name="sweep-infotheoretic",
                              storage=f"sqlite:///{tmp_path / 'sweep.db'}")
    assert len(study.trials) == 2 and study.user_attrs["objective"] == "pseudo_auroc"
    assert _sweep(data_dir, tmp_path, 1) == 0  # same storage: the study grows
    study = optuna.load_study(study_name="sweep-infotheoretic",
                              storage=f"sqlite:///{tmp_path / 'sweep.db'}")
    assert len(study.trials) == 3
    assert len({t.params["beta"] for t in study.trials}) == 3  # resumed sampler draws anew
    best = json.loads((tmp_path / "best.json").read_text())
    assert set(best) == {"detector", "train"}
    assert best["detector"]["beta"] == study.best_trial.params["beta"]
    assert best["detector"]["width"] == 4 and best["train"]["batch_size"] == 16
    run = tmp_path / "run"
    assert main(["train", "--detector", "infotheoretic", "--data", str(data_dir), "--out",
                 str(run), "--epochs", "1", "--config", str(tmp_path / "best.json"),
                 "--no-progress"]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["config"]["beta"] == best["detector"]["beta"]
    assert cfg["config"]["temperature"] == best["detector"]["temperature"]


def test_labelled_validation_changes_the_objective(data_dir, tmp_path, capsys):
    assert _sweep(data_dir, tmp_path, 1, "--labelled-validation", str(data_dir),
                  "--study-name", "lab") == 0
    assert "LABELLED" in capsys.readouterr().out
    # the label-free study of the same name cannot be resumed with labels
    assert _sweep(data_dir, tmp_path, 1, "--study-name", "lab") == 2


def test_parse_param_errors():
    assert parse_param("critic=choice:cosine,bilinear").args == ("cosine", "bilinear")
    assert parse_param("width=int:4:16").args == (4, 16)
    for bad in ("beta", "beta=gauss:0:1", "beta=loguniform:0:1", "beta=uniform:2:1"):
        with pytest.raises(DarklensError):
            parse_param(bad)
