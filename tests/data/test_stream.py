"""stream_images reads what load_dataset reads, in the same order, a bounded batch at a time."""

from __future__ import annotations

import numpy as np
import pytest

from darklens.data.fingerprint import fingerprint
from darklens.data.formats import load_dataset, save_npy, write_deeplense_folder, write_shard
from darklens.data.stream import BadInput, ImageBatch, count_images, scan_images, stream_images
from darklens.errors import DataError
from toy_lenses import toy_lensdata


def _all(path, **kw):
    items = list(stream_images(path, **kw))
    batches = [b for b in items if isinstance(b, ImageBatch)]
    images = np.concatenate([b.images for b in batches])
    labels = np.concatenate([b.labels for b in batches])
    return items, images, labels, [n for b in batches for n in b.names]


@pytest.mark.parametrize("layout", ["shards", "tree", "plain"])
def test_same_images_and_order_as_load_dataset(tmp_path, layout):
    data = toy_lensdata(7, size=16, seed=1)
    if layout == "shards":
        for name in data.class_names:
            write_shard(tmp_path / name / "shard-00000.h5", data.of_class(name))
    elif layout == "tree":
        write_deeplense_folder(tmp_path, data)
    else:
        for i in range(5):
            save_npy(tmp_path / f"img{i}.npy", data.images[i, 0])
    loaded = load_dataset(tmp_path)
    items, images, labels, names = _all(tmp_path, batch_size=4)
    assert all(len(b.names) <= 4 for b in items)
    np.testing.assert_array_equal(images, loaded.images)
    np.testing.assert_array_equal(labels, loaded.labels)
    assert count_images(tmp_path) == len(loaded) == len(names)
    if layout != "shards":
        assert names == loaded.attrs["files"]
    found = scan_images(tmp_path, batch_size=3)  # evaluate's first pass
    assert found.fingerprint == fingerprint(loaded) and found.names == names
    np.testing.assert_array_equal(found.labels, loaded.labels)


def test_bad_files_skip_or_stop(tmp_path):
    data = toy_lensdata(2, size=16, seed=1)
    for i in range(3):
        save_npy(tmp_path / f"img{i}.npy", data.images[i, 0])
    (tmp_path / "img1b.npy").write_bytes(b"not numpy")
    items, images, _, names = _all(tmp_path, on_bad="skip")
    bad = [b for b in items if isinstance(b, BadInput)]
    assert [b.name for b in bad] == [str(tmp_path / "img1b.npy")] and len(names) == 3
    with pytest.raises(DataError, match="img1b.npy"):
        list(stream_images(tmp_path))
    with pytest.raises(DataError, match="expected"):
        list(stream_images(tmp_path / "img0.npy", shape=(1, 8, 8)))
