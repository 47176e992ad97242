"""train_run: the one way from options to a saved run (build, fit, score normals, save)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from darklens.errors import DarklensError
from darklens.train.run import train_run
from toy_lenses import rings

SIZE = 32


def _data(n: int, seed: int) -> TensorDataset:
    return TensorDataset(torch.from_numpy(rings(n, SIZE, seed)), torch.zeros(n, dtype=torch.long))


def test_train_run_saves_a_run_with_its_options_and_normal_scores(tmp_path):
    seen = {}

    def prepare(detector, values):
        seen["defaults_then_options"] = dict(values)
        values["epochs"] = 1  # the benchmark plans its epochs here

    run = train_run("dcae", {"latent_dim": 8}, {"epochs": 3, "batch_size": 8},
                    _data(24, 0), _data(8, 1), image_size=SIZE, in_channels=1, seed=2,
                    overrides={"out_dir": str(tmp_path), "progress": False},
                    prepare=prepare, extra={"normal": "no_sub"})
    assert seen["defaults_then_options"]["epochs"] == 3
    assert seen["defaults_then_options"]["seed"] == 2
    assert run.result.epochs_run == 1 and run.config.epochs == 1
    assert run.normal_scores is not None and run.normal_scores.shape == (8,)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["normal"] == "no_sub"
    assert config["train"]["epochs"] == 1 and config["result"]["epochs_run"] == 1
    assert (tmp_path / "weights.pt").is_file() and (tmp_path / "normal_stats.json").is_file()


def test_train_run_without_a_directory_saves_nothing(tmp_path):
    run = train_run("knn", {}, {}, _data(16, 0), _data(4, 1), image_size=SIZE, in_channels=1,
                    seed=0, overrides={"progress": False})
    assert run.normal_scores is None and run.config.out_dir is None
    assert np.isfinite(run.detector.score(torch.from_numpy(rings(2, SIZE, 3))).numpy()).all()
    with pytest.raises(DarklensError, match="bad options for detector knn"):
        train_run("knn", {"no_such_option": 1}, {}, _data(16, 0), _data(4, 1),
                  image_size=SIZE, in_channels=1, seed=0)
