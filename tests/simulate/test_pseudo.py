"""Physical pseudo-anomalies: the same normal lens, the same noise, plus point-mass perturbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from darklens.simulate.pseudo import perturbed_normals
from darklens.simulate.simulator import simulate_dataset


@pytest.fixture(scope="module")
def normals() -> torch.Tensor:
    data = simulate_dataset("demo", 6, 5, classes=("no_sub",), backend="eager")
    return torch.as_tensor(data.images)


def test_negligible_perturbers_give_back_the_normal_image(normals) -> None:
    faint = perturbed_normals("demo", np.arange(6), 5, fraction=(1e-12, 2e-12))
    assert torch.equal(faint, normals)


def test_perturbers_change_the_image_near_the_ring_and_are_reproducible(normals) -> None:
    a = perturbed_normals("demo", np.arange(6), 5, pseudo_seed=1)
    assert a.shape == normals.shape
    assert (a - normals).abs().amax(dim=(1, 2, 3)).min() > 0.01
    assert torch.equal(a, perturbed_normals("demo", np.arange(6), 5, pseudo_seed=1))
    assert not torch.equal(a, perturbed_normals("demo", np.arange(6), 5, pseudo_seed=2))
    # Stronger perturbers change the images more.
    weak = perturbed_normals("demo", np.arange(6), 5, pseudo_seed=1, fraction=(1e-3, 1e-3))
    strong = perturbed_normals("demo", np.arange(6), 5, pseudo_seed=1, fraction=(0.1, 0.1))
    assert (strong - normals).abs().sum() > 3 * (weak - normals).abs().sum()


def test_bad_count() -> None:
    with pytest.raises(ValueError):
        perturbed_normals("demo", np.arange(2), 5, max_perturbers=0)


def test_pseudo_for_data_uses_what_the_data_record_of_their_simulation(normals) -> None:
    from darklens.data.lensdata import LensData
    from darklens.simulate.pseudo import pseudo_for_data

    data = simulate_dataset("demo", 6, 5, classes=("no_sub",), backend="eager")
    rows = np.array([4, 1])
    got = pseudo_for_data(data, rows, pseudo_seed=3)
    want = perturbed_normals("demo", np.array([4, 1]), 5, pseudo_seed=3)
    assert torch.equal(got, want)
    bare = LensData(images=data.images, labels=data.labels)  # no record of the simulation
    assert pseudo_for_data(bare, rows) is None
    assert pseudo_for_data(data, np.array([], dtype=int)) is None


def test_a_training_run_hands_physical_pseudo_anomalies_to_the_detector() -> None:
    """What ``darklens train``, ``Detector.fit`` and a sweep trial all call."""
    from darklens.train.data import detection_data
    from darklens.train.detector_run import physical_pseudo

    data = simulate_dataset("demo", 20, 5, classes=("no_sub", "cdm"), backend="eager")
    det_data = detection_data(data, "no_sub", 0)

    class Det:  # a detector that declares the hook (Detector.accepts_pseudo_anomalies)
        accepts_pseudo_anomalies = True
        pseudo = None

        def set_pseudo_anomalies(self, images):
            self.pseudo = images

    det = Det()
    record = physical_pseudo(det, data, det_data.split, det_data.normaliser, "no_sub", 0)
    n_val = int((data.labels[det_data.split.val] == 0).sum())
    assert det.pseudo is not None and det.pseudo.shape == (n_val, 1, 64, 64)
    assert float(det.pseudo.min()) >= 0.0 and float(det.pseudo.max()) <= 1.0  # minmax, as trained
    assert record == {"kind": "physical", "n": n_val, "pseudo_seed": 0}
