"""The loop's time budget (``TrainConfig.max_minutes``): training stops between epochs."""

from __future__ import annotations

import time

import torch
from torch.utils.data import TensorDataset

from darklens.models.base import create_detector
from darklens.train.loop import TrainConfig, fit
from toy_lenses import rings


def test_max_minutes_stops_between_epochs_and_unset_runs_every_epoch(monkeypatch):
    data = TensorDataset(torch.from_numpy(rings(16, 32, 0)), torch.zeros(16, dtype=torch.long))
    det = create_detector("dcae", image_size=32, latent_dim=8)
    slow = det.training_loss

    def training_loss(batch):  # about 0.1 s per epoch of 2 batches
        time.sleep(0.05)
        return slow(batch)

    monkeypatch.setattr(det, "training_loss", training_loss)
    # 0.02 min = 1.2 s: a few epochs of >= 0.1 s fit, not 50
    cfg = TrainConfig(epochs=50, batch_size=8, max_minutes=0.02, progress=False)
    result = fit(det, data, None, cfg)
    assert result.stopped_by_time and 1 <= result.epochs_run < 12
    epoch_s = [row["seconds"] for row in result.history]
    # an epoch starts only if it is predicted to end within the budget
    assert sum(epoch_s) < 1.2 + max(epoch_s)
    det2 = create_detector("dcae", image_size=32, latent_dim=8)
    full = fit(det2, data, None, TrainConfig(epochs=3, batch_size=8, progress=False))
    assert full.epochs_run == 3 and not full.stopped_by_time
