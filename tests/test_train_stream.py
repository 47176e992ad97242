"""Training straight from the simulator: an endless, resumable stream of normal images."""

from __future__ import annotations

import json

import torch

from darklens.cli import main
from darklens.train.data import SimulatorStream


def _first(stream: SimulatorStream, n: int) -> torch.Tensor:
    it = iter(stream)
    return torch.stack([next(it)[0] for _ in range(n)])


def test_stream_is_deterministic_per_epoch_and_new_each_epoch():
    stream = SimulatorStream("demo", seed=4, images_per_epoch=8, chunk=4)
    a = _first(stream, 6)
    assert a.shape[1:] == (1, 64, 64) and torch.isfinite(a).all()
    assert a.min() >= 0 and a.max() <= 1  # min-max normalised
    assert torch.equal(a, _first(stream, 6))  # replayable (resume sees the same images)
    stream.set_epoch(1)
    assert not torch.equal(a, _first(stream, 6))  # a new epoch draws new lenses


def test_darklens_train_on_the_fly_from_a_preset(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--detector", "dcae", "--preset", "demo", "--out", str(run),
                 "--epochs", "1", "--batch-size", "4", "--steps-per-epoch", "2",
                 "--val-size", "4", "--no-progress", "--config", '{"latent_dim": 8}']) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["stream"] == "demo" and config["train"]["steps_per_epoch"] == 2
    assert (run / "weights.pt").is_file()
