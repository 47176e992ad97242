"""Every registered detector: trains briefly, scores finitely, survives save/load, finds blobs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch.utils.data import TensorDataset

from darklens.errors import CheckpointError
from darklens.models.base import create_detector, list_detectors
from darklens.models.persistence import NORMAL_STATS, WEIGHTS, load_run, save_run
from darklens.models.scoring import score_images
from darklens.train.loop import TrainConfig, fit
from toy_lenses import add_blobs, rings

SIZE = 32
# Small networks and short runs that still learn the toy rings; a detector not listed here is
# tested with its defaults at 32x32 and 5 epochs.
DETECTOR_CONFIG = {
    "dcae": {"latent_dim": 64},
    "cvae": {"latent_dim": 64},
    "aae": {"latent_dim": 64},
    "rbm": {"n_hidden": 128},
    # a tiny guess network (generic prior at 32x32) and few LM iterations keep it quick
    "residual-chi2": {"guess_images": 300, "guess_epochs": 2, "calibration_images": 32,
                      "fit_options": {"iterations": 10}},
}
EPOCHS = {"deep-svdd": 15, "rbm": 3}


@pytest.fixture(scope="module")
def toy():
    def tensors(x):
        return TensorDataset(torch.from_numpy(x), torch.zeros(len(x), dtype=torch.long))

    test_normal = rings(96, SIZE, seed=9)
    return {
        "train": tensors(rings(192, SIZE, seed=0)),
        "val": tensors(rings(48, SIZE, seed=5)),
        "test_normal": test_normal,
        "test_anomaly": add_blobs(test_normal, seed=3),
    }


def test_registry_lists_the_baselines():
    assert {"dcae", "cvae", "aae", "rbm", "deep-svdd", "knn"} <= set(list_detectors())
    with pytest.raises(KeyError, match="unknown detector"):
        create_detector("no-such-detector")


@pytest.mark.parametrize("name", list_detectors())
def test_detector_trains_scores_round_trips_and_finds_blobs(name, toy, tmp_path):
    torch.manual_seed(0)
    det = create_detector(name, image_size=SIZE, **DETECTOR_CONFIG.get(name, {}))
    defaults = {k: v for k, v in det.train_defaults.items()
                if k in ("lr", "weight_decay", "scheduler")}
    cfg = TrainConfig(**{**defaults, "epochs": EPOCHS.get(name, 5), "batch_size": 32,
                         "progress": False, "seed": 0})
    result = fit(det, toy["train"], toy["val"], cfg)
    if det.optimizer_groups():
        assert result.epochs_run >= 1
        assert all(np.isfinite(v) for row in result.history for v in row.values())

    batch = torch.from_numpy(toy["test_normal"][:7])
    s = det.score(batch)
    assert s.shape == (7,) and torch.isfinite(s).all()

    normal = score_images(det, toy["test_normal"])
    anomal = score_images(det, toy["test_anomaly"])
    save_run(tmp_path / "run", det, normal_scores=normal)
    loaded = load_run(tmp_path / "run")
    assert type(loaded) is type(det) and loaded.config == det.config
    np.testing.assert_array_equal(score_images(loaded, toy["test_normal"]), normal)
    assert (tmp_path / "run" / NORMAL_STATS).is_file()

    y = np.r_[np.zeros(len(normal)), np.ones(len(anomal))]
    auroc = roc_auc_score(y, np.r_[normal, anomal])
    assert auroc > 0.9, f"{name}: AUROC {auroc:.3f} on bright blobs"


def test_load_run_rejects_missing_corrupt_and_pickled_files(tmp_path):
    with pytest.raises(CheckpointError, match="no such run"):
        load_run(tmp_path / "nothing")
    det = create_detector("knn", image_size=SIZE)
    det.fit_start([torch.from_numpy(rings(8, SIZE))])
    run = save_run(tmp_path / "run", det)
    (run / WEIGHTS).write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        load_run(run)

    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    torch.save({"bank": Evil()}, run / WEIGHTS)
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        load_run(run)
    (run / WEIGHTS).unlink()
    with pytest.raises(CheckpointError, match="missing weights"):
        load_run(run)
    (run / "config.json").write_text("{broken")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_run(run)


@pytest.mark.parametrize("name", list_detectors())
def test_optional_hooks_are_declared_not_probed(name):
    """Each optional hook works exactly when the detector's flag says it does."""
    det = create_detector(name, image_size=SIZE, **DETECTOR_CONFIG.get(name, {})).eval()
    images = torch.from_numpy(rings(3, SIZE, seed=1))
    if det.representation is None:
        with pytest.raises(NotImplementedError):
            det.embed(images)
    else:
        with torch.no_grad():
            feats = det.embed(images).flatten(1)
        assert feats.shape[0] == 3 and feats.shape[1] > 0 and torch.isfinite(feats).all()
    for flag, setter in (("accepts_labelled_anomalies", det.set_labelled_anomalies),
                         ("accepts_pseudo_anomalies", det.set_pseudo_anomalies)):
        if getattr(det, flag):
            setter(images)
            setter(None)
        else:
            with pytest.raises(NotImplementedError):
                setter(images)
    diag = det.diagnostics()
    assert diag is None or isinstance(diag, dict)
