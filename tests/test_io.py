"""darklens.io.npy_rows: a .npy written a block at a time is np.save's file, or nothing."""

from __future__ import annotations

import io

import numpy as np
import pytest

from darklens.io import npy_rows


def test_blocks_make_the_bytes_of_np_save(tmp_path):
    a = np.random.default_rng(0).normal(size=(7, 5, 2))
    with npy_rows(tmp_path / "x.npy", (5, 2)) as rows:
        rows.append(a[:3])
        rows.append(a[3:])
        with pytest.raises(ValueError, match="rows of shape"):
            rows.append(np.zeros((1, 4, 2)))
    expected = io.BytesIO()
    np.save(expected, a.astype(np.float32))
    assert (tmp_path / "x.npy").read_bytes() == expected.getvalue()
    assert [p.name for p in tmp_path.iterdir()] == ["x.npy"]


def test_a_failed_write_leaves_nothing(tmp_path):
    (tmp_path / "x.npy").write_bytes(b"before")
    with pytest.raises(KeyError), npy_rows(tmp_path / "x.npy", (2,)) as rows:
        rows.append(np.ones((3, 2)))
        raise KeyError
    assert (tmp_path / "x.npy").read_bytes() == b"before"
    assert [p.name for p in tmp_path.iterdir()] == ["x.npy"]
