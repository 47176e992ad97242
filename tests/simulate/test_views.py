"""Simulator-native views: the same lens rendered with independent noise draws."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from darklens.simulate.presets import get_preset
from darklens.simulate.simulator import simulate_batch
from darklens.simulate.views import render_views

PRESET = get_preset("demo", {"n_pix": "32"})


def test_view_zero_is_the_simulated_image_and_views_differ_only_in_noise() -> None:
    idx = np.array([0, 3, 7])
    views = render_views(PRESET, "cdm", idx, seed=11, n_views=3)
    images, _ = simulate_batch(PRESET, "cdm", idx, 11)
    assert views.shape == (3, 3, 32, 32) and views.dtype == torch.float32
    assert torch.equal(views[:, 0], images[:, 0])
    assert torch.equal(render_views(PRESET, "cdm", idx, seed=11, n_views=3), views)  # replayable
    diff = views[:, 1] - views[:, 2]
    assert (diff.flatten(1).abs().amax(1) > 0).all()  # a new noise field per view
    # Same lens: the views agree far better than different lenses do.
    other = views[[1, 2, 0], 0]
    same = (views[:, 0] - views[:, 1]).pow(2).mean()
    assert same < 0.5 * (views[:, 0] - other).pow(2).mean()
    # Same noise level in every view: all pairwise differences have the same spread.
    spread = [float((views[:, a] - views[:, b]).std()) for a, b in ((0, 1), (0, 2), (1, 2))]
    assert max(spread) < 1.2 * min(spread)

def test_bad_number_of_views() -> None:
    with pytest.raises(ValueError, match="n_views"):
        render_views(PRESET, "no_sub", np.arange(2), seed=0, n_views=0)
