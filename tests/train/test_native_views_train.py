"""Simulator-native views from the training stream and `darklens train --views native`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from darklens.cli import main
from darklens.data.dataset import Normaliser
from darklens.data.formats import write_deeplense_folder
from darklens.simulate.observation import noise_sigma
from darklens.simulate.parameters import draw_parameters
from darklens.simulate.presets import get_preset
from darklens.simulate.render import render_noiseless
from darklens.simulate.simulator import simulate_dataset
from darklens.simulate.views import render_views
from darklens.train import distributed as dd
from darklens.train.data import SimulatorStream

# Flux units and no extra normalisation, so each view is the noiseless render plus noise.
RAW = get_preset("demo", {"n_pix": "32", "normalisation": "flux"})
SMALL = get_preset("demo", {"n_pix": "32"})
TINY_NET = {"width": 4, "depth": 2, "feat_dim": 16, "proj_dim": 8, "bank_size": 32,
            "select_images": 8}


def _take(stream: SimulatorStream, n: int) -> torch.Tensor:
    it = iter(stream)
    return torch.stack([next(it)[0] for _ in range(n)])


def _clean_and_sigma(preset, idx: np.ndarray, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    p = draw_parameters(preset, "no_sub", torch.as_tensor(idx), seed)
    clean = render_noiseless(preset, p, substructure=True)
    return clean, noise_sigma(preset, p, clean).expand_as(clean)


def test_stream_views_are_one_noiseless_lens_with_independent_noise() -> None:
    stream = SimulatorStream(RAW, seed=4, images_per_epoch=8, chunk=3, n_views=3,
                             normaliser=Normaliser("none"))
    views = _take(stream, 5)
    assert views.shape == (5, 3, 32, 32) and views.dtype == torch.float32
    clean, sigma = _clean_and_sigma(RAW, np.arange(5), seed=4)
    resid = (views.double() - clean[:, None].double()) / sigma[:, None].double()
    # Every view is the same noiseless render plus unit noise in units of its sigma ...
    std = resid.flatten(2).std(dim=2)
    assert ((std > 0.9) & (std < 1.1)).all(), std
    assert resid.flatten(2).mean(dim=2).abs().max() < 0.15
    # ... whose fields are independent draws (not one field reused) ...
    r = resid.flatten(2)
    for a, b in ((0, 1), (0, 2), (1, 2)):
        corr = torch.nn.functional.cosine_similarity(r[:, a], r[:, b], dim=1)
        assert corr.abs().max() < 0.15, (a, b, corr)
    # ... and not any lens: against another lens's render the residual is far larger.
    other = (views[:, 0].double() - clean[[1, 2, 3, 4, 0]].double()) / sigma.double()
    assert (other.flatten(1).std(dim=1) > 2).all()
    # View 0 is exactly what the single-image stream yields.
    single = _take(SimulatorStream(RAW, seed=4, images_per_epoch=8, chunk=3,
                                   normaliser=Normaliser("none")), 5)
    assert torch.equal(views[:, :1], single)


def test_stream_views_replay_on_resume_and_ranks_are_disjoint(monkeypatch) -> None:
    stream = SimulatorStream(SMALL, seed=7, images_per_epoch=6, chunk=4, n_views=2)
    first = _take(stream, 6)
    assert first.shape == (6, 2, 32, 32) and first.min() >= 0 and first.max() <= 1
    assert torch.equal(first, _take(stream, 6))  # two passes see the same images
    stream.set_epoch(1)
    assert not torch.equal(first, _take(stream, 6))  # a new epoch: new lenses
    stream.set_epoch(0)
    assert torch.equal(first, _take(stream, 6))  # a resumed epoch replays exactly
    # Image i of rank r is simulator image r * images_per_epoch + i (epoch 0, world size 2).
    monkeypatch.setattr(dd, "world_size", lambda: 2)
    monkeypatch.setattr(dd, "rank", lambda: 1)
    rank1 = _take(stream, 6)
    expected = Normaliser("minmax")(render_views(SMALL, "no_sub", np.arange(6, 12), 7, 2).numpy())
    assert torch.equal(rank1, torch.from_numpy(expected))
    assert not torch.equal(rank1, first)


def test_new_source_keeps_view_zero_and_changes_the_rest() -> None:
    same = render_views(RAW, "no_sub", np.arange(4), 3, n_views=2)
    new = render_views(RAW, "no_sub", np.arange(4), 3, n_views=2, new_source=True)
    assert torch.equal(new[:, 0], same[:, 0])
    clean, sigma = _clean_and_sigma(RAW, np.arange(4), seed=3)
    noise_only = ((same[:, 1] - clean) / sigma).flatten(1).std(dim=1)
    other_source = ((new[:, 1] - clean) / sigma).flatten(1).std(dim=1)
    assert (noise_only < 1.1).all() and (other_source > 1.5).all(), other_source


def _train(run, *extra: str) -> int:
    return main(["train", "--detector", "infotheoretic", "--preset", "demo", "--out", str(run),
                 "--epochs", "1", "--batch-size", "8", "--steps-per-epoch", "2",
                 "--val-size", "8", "--no-progress", "--config", json.dumps(TINY_NET), *extra])


def test_train_with_native_views_then_evaluate_and_score(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    assert _train(run, "--views", "native", "--n-views", "2") == 0
    config = json.loads((run / "config.json").read_text())
    assert config["views"] == {"mode": "native", "n_views": 2, "source": "same"}
    assert config["config"]["augment"] == "none" and config["config"]["in_channels"] == 1
    assert config["diagnostics"]["bank_size"] > 0
    stats = json.loads((run / "normal_stats.json").read_text())
    assert stats  # scored the single validation images

    test_dir = tmp_path / "test"
    write_deeplense_folder(test_dir, simulate_dataset("demo", 3, seed=99))
    assert main(["evaluate", str(run), "--data", str(test_dir)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n"]["all"] == 6 and 0 <= metrics["auroc"]["all"] <= 1
    capsys.readouterr()
    assert main(["score", str(run), str(test_dir)]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 1 + 9


@pytest.mark.parametrize("args, message", [
    (["--data", "somewhere", "--detector", "infotheoretic", "--views", "native"],
     "--views native needs the simulator stream"),
    (["--preset", "demo", "--detector", "dcae", "--views", "native"],
     "detector dcae does not train on views"),
    (["--preset", "demo", "--detector", "infotheoretic", "--n-views", "3"],
     "need --views native"),
    (["--preset", "demo", "--detector", "infotheoretic", "--views", "native", "--n-views", "1"],
     "--n-views must be at least 2"),
])
def test_native_view_mistakes_exit_2_with_one_line(tmp_path, capsys, args, message) -> None:
    assert main(["train", *args, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_native_view_run_stopped_after_one_epoch_resumes_to_the_same_weights(
        tmp_path, monkeypatch) -> None:
    args = ("--views", "native", "--n-views", "3", "--epochs", "2", "--steps-per-epoch", "1",
            "--val-size", "4")
    assert _train(tmp_path / "whole", *args) == 0

    import darklens.train.loop as loop

    write_csv = loop._write_csv

    def stop_after_first_epoch(path, history):  # the process "dies" once epoch 1 is saved
        write_csv(path, history)
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "_write_csv", stop_after_first_epoch)
    assert _train(tmp_path / "cut", *args) == 130  # interrupted, as by Ctrl-C
    assert not (tmp_path / "cut" / "weights.pt").exists()
    monkeypatch.setattr(loop, "_write_csv", write_csv)
    assert _train(tmp_path / "cut", *args, "--resume") == 0
    a = torch.load(tmp_path / "whole" / "weights.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "weights.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_stream_epoch_holds_the_batches_the_loop_draws(tmp_path, monkeypatch) -> None:
    """The stream's epoch is as long as the loop's (the detector's own batch size, 128 for
    infotheoretic), so epoch e + 1 starts after the last image epoch e used."""
    import darklens.train.run as train_run_module

    seen = {}

    def fake_fit(detector, train_set, val_set, cfg):
        seen.update(stream=train_set.images_per_epoch, loop=cfg.steps_per_epoch * cfg.batch_size)
        raise KeyboardInterrupt  # nothing to train: only the sizes are looked at

    monkeypatch.setattr(train_run_module, "fit", fake_fit)
    assert main(["train", "--detector", "infotheoretic", "--preset", "demo", "--out",
                 str(tmp_path / "r"), "--steps-per-epoch", "3", "--val-size", "2",
                 "--views", "native", "--n-views", "2", "--no-progress"]) == 130
    assert seen == {"stream": 3 * 128, "loop": 3 * 128}
