"""One data fingerprint (darklens.data.fingerprint) for detector and regression runs."""

from __future__ import annotations

import hashlib

import numpy as np

from darklens.data.fingerprint import fingerprint
from darklens.models.regression_persistence import is_training_data


def _recorded(fp: str | None) -> dict:
    return {"data": {"fingerprint": fp}} if fp is not None else {"data": {}}


def test_fingerprint_is_sha256_of_float32_images_and_int64_labels(lens_data):
    h = hashlib.sha256(lens_data.images.astype(np.float32).tobytes())
    h.update(lens_data.labels.astype(np.int64).tobytes())
    assert fingerprint(lens_data) == h.hexdigest()


def test_a_regression_run_recognises_its_training_data(lens_data, make_lens_data):
    assert is_training_data(lens_data, _recorded(fingerprint(lens_data)))
    other = make_lens_data(seed=1)
    assert not is_training_data(other, _recorded(fingerprint(lens_data)))
    assert not is_training_data(lens_data, _recorded(None))


def test_runs_written_with_the_former_regression_fingerprint_still_find_their_data(
        lens_data, make_lens_data):
    # regression.json of earlier runs: the image shape hashed before images and labels
    h = hashlib.sha256(str(lens_data.images.shape).encode())
    h.update(lens_data.images.astype(np.float32).tobytes())
    h.update(lens_data.labels.astype(np.int64).tobytes())
    assert is_training_data(lens_data, _recorded(h.hexdigest()))
    assert not is_training_data(make_lens_data(seed=1), _recorded(h.hexdigest()))
