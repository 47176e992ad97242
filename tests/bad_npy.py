"""Bytes of .npy files, good and bad, for the tests of the readers and of the commands that
read images (bad files among good ones)."""

from __future__ import annotations

import io

import numpy as np


def npy_bytes(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    """The bytes ``np.save`` writes for ``array``."""
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=allow_pickle)
    return buf.getvalue()


def pickled_npy(image: np.ndarray) -> bytes:
    """A .npy of an object array (an image and a number, as some published lens files hold):
    readable only by unpickling, which darklens refuses."""
    obj = np.empty(2, dtype=object)
    obj[0], obj[1] = image, 1e-23
    return npy_bytes(obj, allow_pickle=True)
