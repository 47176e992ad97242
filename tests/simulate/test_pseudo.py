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
