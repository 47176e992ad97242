"""stream_images reads what load_dataset reads, in the same order, a bounded batch at a time."""

from __future__ import annotations

import numpy as np
import pytest

from darklens.data.fingerprint import fingerprint
from darklens.data.formats import load_dataset, save_npy, write_deeplense_folder, write_shard
from darklens.data.stream import (
    BadInput,
    ImageBatch,
    count_images,
    rebatch,
    scan_images,
    stream_images,
)
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


def test_rebatch_cuts_as_the_loaded_data_and_keeps_bad_inputs_in_place(tmp_path):
    data = toy_lensdata(5, size=16, seed=2)  # 15 images
    for k, (lo, hi) in enumerate(((0, 5), (5, 6), (6, 15))):
        write_shard(tmp_path / f"shard-{k:05d}.h5", data.select(np.arange(lo, hi)))
    cut = list(rebatch(stream_images(tmp_path, batch_size=4), 4))
    assert [len(b.names) for b in cut] == [4, 4, 4, 3]  # 5 + 1 + 9 images in 4s
    np.testing.assert_array_equal(np.concatenate([b.images for b in cut]),
                                  load_dataset(tmp_path).images)
    bad = BadInput("x.npy", "NaN")
    a, b = ImageBatch(data.images[:3], ["a0", "a1", "a2"], data.labels[:3], data.class_names), \
        ImageBatch(data.images[3:6], ["b0", "b1", "b2"], data.labels[3:6], data.class_names)
    out = list(rebatch([a, bad, b], 2))
    assert [x.name if isinstance(x, BadInput) else x.names for x in out] == [
        ["a0", "a1"], ["a2"], "x.npy", ["b0", "b1"], ["b2"]]
    with pytest.raises(ValueError, match="batch_size"):
        list(rebatch([a], 0))
