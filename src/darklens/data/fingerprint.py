"""The data fingerprint: SHA-256 of the images (float32) and labels (int64), in order.

Every run records the fingerprint of the data it was trained on (detector runs in
``config.json``, regression runs in ``regression.json``), so that evaluation knows whether it
sees the training data (then it uses the held-out test part) or a separate test set (every
image). A ``ShardDataset`` computes the same hash in its streaming pass, without loading the
images.
"""

from __future__ import annotations

import hashlib

import numpy as np

from darklens.data.lensdata import LensData
from darklens.data.shards import ShardDataset


def fingerprint(data: LensData | ShardDataset) -> str:
    """SHA-256 of the images and labels: tells the training data apart from any other set.

    For a ``ShardDataset`` it is the one computed by its streaming pass: the same bytes hashed
    in the same order, so the same value as for the loaded data.
    """
    if isinstance(data, ShardDataset):
        if data.fingerprint is None:
            data._scan()
        return str(data.fingerprint)
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(data.images, dtype=np.float32).tobytes())
    h.update(np.ascontiguousarray(data.labels, dtype=np.int64).tobytes())
    return h.hexdigest()
