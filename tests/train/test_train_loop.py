"""The shared training loop: resume equals an uninterrupted run, NaN stops, early stopping."""

from __future__ import annotations

import csv
from typing import ClassVar

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import IterableDataset, TensorDataset

from darklens.errors import CheckpointError, DarklensError
from darklens.models.base import Detector, create_detector
from darklens.train.loop import (
    CHECKPOINT,
    LOSS_CSV,
    TrainConfig,
    TrainingDiverged,
    fit,
    load_checkpoint,
)
from toy_lenses import rings

SIZE = 32


def _data(n: int, seed: int) -> TensorDataset:
    return TensorDataset(torch.from_numpy(rings(n, SIZE, seed)), torch.zeros(n, dtype=torch.long))


class Interrupt(Exception):
    pass


@pytest.mark.parametrize(("name", "extra"), [
    ("aae", {"scheduler": "cosine", "grad_clip": 1.0}),  # three optimisers, random prior draws
    ("cvae", {"optimizer": "adamw"}),  # one-cycle, random reparametrisation noise
    ("dcae", {"optimizer": "sgd", "scheduler": "cosine", "lr": 0.05}),  # BatchNorm buffers
])
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(name, extra, tmp_path):
    train, val = _data(64, 0), _data(16, 1)
    epochs: list[int] = []

    def run(out, resume=False, stop_at=None):
        torch.manual_seed(123)
        det = create_detector(name, image_size=SIZE, latent_dim=16)
        epochs.clear()

        def hook(epoch, row):
            epochs.append(epoch)
            if epoch == stop_at:
                raise Interrupt

        cfg = TrainConfig(epochs=3, batch_size=16, seed=7, out_dir=str(out), resume=resume,
                          progress=False, **extra)
        return det, fit(det, train, val, cfg, on_epoch_end=hook)

    full_det, full = run(tmp_path / "full")
    with pytest.raises(Interrupt):
        run(tmp_path / "cut", stop_at=1)
    assert load_checkpoint(tmp_path / "cut" / CHECKPOINT)["epoch"] == 1
    resumed_det, resumed = run(tmp_path / "cut", resume=True)
    assert epochs == [2, 3]  # epoch 1 came from the checkpoint

    ref, got = full_det.state_dict(), resumed_det.state_dict()
    assert ref.keys() == got.keys()
    for key in ref:
        assert torch.equal(ref[key], got[key]), key
    assert [r["val_loss"] for r in resumed.history] == [r["val_loss"] for r in full.history]
    with open(tmp_path / "cut" / LOSS_CSV) as fh:
        rows = list(csv.DictReader(fh))
    assert [int(float(r["epoch"])) for r in rows] == [1, 2, 3]


class _Scripted(Detector):
    """A one-parameter detector whose losses follow a script (to test the loop's decisions)."""

    name = "scripted"
    train_defaults: ClassVar[dict] = {}

    def __init__(self, nan_at_call: int | None = None, val_losses: tuple = ()):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))
        self.calls, self.nan_at_call = 0, nan_at_call
        self.val_losses, self.val_calls = list(val_losses), 0

    def training_loss(self, batch: Tensor) -> Tensor:
        self.calls += 1
        loss = (self.w * batch.mean()) ** 2
        return loss * float("nan") if self.calls == self.nan_at_call else loss

    def validation_loss(self, batch: Tensor) -> Tensor:
        v = self.val_losses[min(self.val_calls, len(self.val_losses) - 1)]
        return torch.tensor(v)

    def score(self, images: Tensor) -> Tensor:
        return images.flatten(1).mean(1) * self.w


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(tmp_path):
    det = _Scripted(nan_at_call=7)  # 4 steps per epoch: NaN in epoch 2
    cfg = TrainConfig(epochs=5, batch_size=8, out_dir=str(tmp_path), progress=False)
    with pytest.raises(TrainingDiverged, match=r"became nan at epoch 2.*last good checkpoint"):
        fit(det, _data(32, 0), None, cfg)
    ck = load_checkpoint(tmp_path / CHECKPOINT)
    assert ck["epoch"] == 1 and torch.isfinite(ck["model"]["w"]).all()
    assert issubclass(TrainingDiverged, DarklensError)


def test_early_stopping_restores_the_best_epoch(tmp_path):
    class Counting(_Scripted):
        def validation_loss(self, batch):
            return torch.tensor(self.val_losses[self.val_calls])

    det = Counting(val_losses=(3.0, 1.0, 2.0, 2.5, 0.5, 0.1))
    snapshots = []

    def hook(epoch, row):
        det.val_calls += 1
        snapshots.append(det.w.detach().clone())

    cfg = TrainConfig(epochs=6, batch_size=8, patience=2, out_dir=str(tmp_path), progress=False)
    result = fit(det, _data(32, 0), _data(8, 1), cfg, on_epoch_end=hook)
    assert result.stopped_early and result.epochs_run == 4
    assert result.best_epoch == 2 and result.best_val_loss == 1.0
    assert torch.equal(det.w.detach(), snapshots[1])


def test_a_models_selection_loss_picks_the_epoch_in_place_of_the_validation_loss(tmp_path):
    class Choosing(_Scripted):
        """Validation loss falls every epoch; the model's own criterion is best at epoch 2."""

        def __init__(self):
            super().__init__()
            self.choices = iter((0.5, 0.2, 0.4, 0.3))

        def validation_loss(self, batch):
            return torch.tensor(1.0 / (1 + self.val_calls))

        def selection_loss(self, loader, val_loader=None):
            assert next(iter(loader)).shape[0] > 0 and val_loader is not None
            return next(self.choices)

    det = Choosing()
    snapshots = []

    def hook(epoch, row):
        det.val_calls += 1
        snapshots.append(det.w.detach().clone())

    cfg = TrainConfig(epochs=4, batch_size=8, out_dir=str(tmp_path), progress=False)
    result = fit(det, _data(32, 0), _data(8, 1), cfg, on_epoch_end=hook)
    assert result.best_epoch == 2 and torch.equal(det.w.detach(), snapshots[1])
    assert [row["selection_loss"] for row in result.history] == [0.5, 0.2, 0.4, 0.3]
    with open(tmp_path / LOSS_CSV) as f:
        assert [float(r["selection_loss"]) for r in csv.DictReader(f)] == [0.5, 0.2, 0.4, 0.3]


class _Stream(IterableDataset):
    """An endless stream of toy rings whose draws depend on the epoch (resumable)."""

    def __init__(self):
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        i = 0
        while True:
            yield torch.from_numpy(rings(1, SIZE, seed=1000 * self.epoch + i)[0]), 0
            i += 1


def test_endless_stream_needs_and_uses_steps_per_epoch():
    det = create_detector("dcae", image_size=SIZE, latent_dim=8)
    with pytest.raises(DarklensError, match="steps_per_epoch"):
        fit(det, _Stream(), None, TrainConfig(epochs=1, progress=False))
    result = fit(det, _Stream(), None, TrainConfig(epochs=2, batch_size=4, steps_per_epoch=3,
                                                   progress=False))
    assert result.epochs_run == 2


def test_bad_options_and_mismatched_checkpoints_are_clear_errors(tmp_path):
    det = create_detector("dcae", image_size=SIZE, latent_dim=8)
    with pytest.raises(DarklensError, match="unknown optimizer"):
        fit(det, _data(8, 0), None, TrainConfig(optimizer="lbfgs", progress=False))
    with pytest.raises(DarklensError, match="unknown training option"):
        TrainConfig.from_dict({"epochs": 1, "lr_max": 3})
    fit(det, _data(16, 0), None, TrainConfig(epochs=1, batch_size=8, out_dir=str(tmp_path),
                                             progress=False))
    with pytest.raises(CheckpointError, match="same number of epochs"):
        fit(det, _data(16, 0), None, TrainConfig(epochs=3, batch_size=8, out_dir=str(tmp_path),
                                                 resume=True, progress=False))
    other = create_detector("cvae", image_size=SIZE, latent_dim=8)
    with pytest.raises(CheckpointError, match="for detector 'dcae'"):
        fit(other, _data(16, 0), None, TrainConfig(epochs=2, out_dir=str(tmp_path), resume=True,
                                                   progress=False))


def test_detectors_and_the_regressor_are_trainables_of_the_one_loop():
    from darklens.models.base import list_detectors
    from darklens.models.regressor import Regressor
    from darklens.train.regression import RegressionTrainable
    from darklens.train.trainable import Trainable

    for name in ("dcae", "aae", "knn"):
        assert name in list_detectors()
        assert isinstance(create_detector(name, image_size=32), Trainable)
    reg = RegressionTrainable(Regressor(["theta_e"], "small"))
    assert isinstance(reg, Trainable) and reg.wants_labels
    reg.model.set_standardisation([1.0], [2.0])
    x, y = torch.zeros(4, 1, 32, 32), torch.zeros(4, 1)
    reg.eval()
    loss = reg.validation_loss((x, y))
    assert torch.isfinite(loss)
    terms = reg.validation_terms()
    assert set(terms) == {"val_mae_theta_e"} and reg.validation_terms() == {}
