"""darklens.simulate and darklens.load."""

from __future__ import annotations

import numpy as np
import pytest

import darklens as dl
from darklens.data.deeplense import write_deeplense_folder


def test_simulate_is_reproducible_and_takes_overrides():
    a = dl.simulate("demo", 2, seed=5, n_pix=32, classes=["no_sub", "vortex"])
    b = dl.simulate("demo", 2, seed=5, n_pix=32, classes=["no_sub", "vortex"])
    c = dl.simulate("demo", 2, seed=6, n_pix=32, classes=["no_sub", "vortex"])
    assert a.images.shape == (4, 1, 32, 32) and a.images.dtype == np.float32
    assert list(a.labels) == [0, 0, 2, 2]
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.images, c.images)
    assert a.attrs["seed"] == 5 and a.attrs["preset"]["n_pix"] == 32


@pytest.mark.parametrize("kwargs, match", [
    ({"preset": "nope"}, "unknown preset 'nope'"),
    ({"preset": "demo", "no_such_field": 1}, "unknown preset field 'no_such_field'"),
    ({"preset": "demo", "n_per_class": 0}, "at least 1"),
    ({"preset": "demo", "classes": ["axion"]}, "unknown class 'axion'"),
])
def test_simulate_bad_input_is_one_line(kwargs, match):
    kwargs = {"n_per_class": 1, **kwargs}
    with pytest.raises(dl.DarklensError, match=match) as err:
        dl.simulate(**kwargs)
    assert "\n" not in str(err.value)


def test_load_reads_what_was_written(tmp_path, small_data):
    write_deeplense_folder(tmp_path / "dl", small_data)
    back = dl.load(tmp_path / "dl")
    np.testing.assert_array_equal(np.sort(back.images.ravel()),
                                  np.sort(small_data.images.ravel()))
    assert sorted(back.labels) == sorted(small_data.labels)
    assert len(dl.load(tmp_path / "dl", classes=["cdm"])) == 12


def test_load_missing_path():
    with pytest.raises(dl.DarklensError, match="no such file"):
        dl.load("/nonexistent/data")
