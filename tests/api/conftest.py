"""Small shared data for the API tests: 32x32 demo lenses and one detector trained on them."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def small_data():
    import darklens as dl

    return dl.simulate("demo", 12, seed=0, n_pix=32)


@pytest.fixture(scope="module")
def trained(small_data):
    import darklens as dl

    return dl.create_detector("dcae", latent_dim=8).fit(small_data, epochs=1, test_fraction=0.2)
