"""Training data streamed from HDF5 shards: the same images, labels, fingerprint, normalisation
and trained weights as with the data loaded whole, within a bounded cache; bad shards refused."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import darklens.commands.train as train_cmd
from darklens.cli import main
from darklens.data.dataset import ImageDataset, Normaliser
from darklens.data.fingerprint import fingerprint
from darklens.data.formats import load_dataset, write_shard
from darklens.data.lensdata import LensData
from darklens.data.shards import ShardDataset, is_shard_path
from darklens.errors import DataError
from toy_lenses import toy_lensdata

SIZE = 32


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    """Four shards of uneven sizes (one empty, one stored as float64) in two class folders."""
    root = tmp_path_factory.mktemp("shards")
    data = toy_lensdata(40, size=SIZE, seed=0)
    data.images += np.float32(3.0)  # not centred: a harder case for the streamed std
    parts = [(root / "a" / "shard-00000.h5", slice(0, 50)),
             (root / "a" / "shard-00001.h5", slice(50, 50)),
             (root / "b" / "shard-00000.h5", slice(50, 107)),
             (root / "b" / "shard-00001.h5", slice(107, 120))]
    for path, part in parts:
        write_shard(path, data.select(part))
    with h5py.File(root / "c.h5", "w") as f:  # a foreign writer: float64, no chunks
        f["images"] = data.images[:7].astype(np.float64)
        f["label"] = data.labels[:7]
    (root / ".hidden.h5").write_bytes(b"an unfinished write")  # ignored like load_dataset does
    return root


def test_same_images_labels_and_fingerprint_as_load_dataset(shard_dir):
    whole = load_dataset(shard_dir)
    for cache_mb in (0.0, 0.05, 64.0):  # no cache, a cache of three blocks, everything
        ds = ShardDataset.from_path(shard_dir, cache_mb=cache_mb)
        assert len(ds) == len(whole) == 127 and ds.class_names == whole.class_names
        assert ds.images.shape == whole.images.shape
        np.testing.assert_array_equal(ds.labels, whole.labels)
        order = np.random.default_rng(1).permutation(len(ds))  # random access, as in training
        for i in order:
            image, label = ds[int(i)]
            assert label == whole.labels[i]
            assert np.array_equal(image.numpy(), whole.images[i]), i
        assert ds._cached <= ds.cache_bytes
        assert ds.fingerprint == fingerprint(whole)
    np.testing.assert_array_equal(ds.images[order[:9]], whole.images[order[:9]])
    assert is_shard_path(shard_dir) and is_shard_path(shard_dir / "c.h5")


def test_streamed_standard_normalisation_matches_the_loaded_fit(shard_dir):
    whole = load_dataset(shard_dir)
    ds = ShardDataset.from_path(shard_dir, cache_mb=0.05)
    idx = np.random.default_rng(2).choice(len(ds), 60, replace=False)
    want = Normaliser.fit("standard", whole.images[idx])
    got = ds.fit_normaliser("standard", idx)
    assert got.mode == "standard"
    assert got.mean == pytest.approx(want.mean, rel=1e-12)
    assert got.std == pytest.approx(want.std, rel=1e-12)
    assert np.float32(got.mean) == np.float32(want.mean)  # what is applied to the images
    assert ds.fit_normaliser("minmax", idx) == Normaliser("minmax")


def test_dataloader_workers_read_their_own_handles(shard_dir):
    whole = load_dataset(shard_dir)
    ds = ShardDataset.from_path(shard_dir, cache_mb=0.05)
    ds.image(0)  # the parent has a file open and a block cached: workers must not use them
    view = ImageDataset(ds, np.arange(0, len(ds), 2), Normaliser("minmax"))
    loader = DataLoader(view, batch_size=16, num_workers=2)
    images = torch.cat([b[0] for b in loader]).numpy()
    np.testing.assert_array_equal(images, Normaliser("minmax")(whole.images[::2]))


def test_bad_shards_are_refused_naming_the_file(tmp_path):
    data = toy_lensdata(4, size=SIZE, seed=0)
    bad = LensData(data.images.copy(), data.labels)
    bad.images[5, 0, 3, 3] = np.nan
    write_shard(tmp_path / "nan" / "s.h5", bad)
    with pytest.raises(DataError, match=r"s\.h5: image 5 has NaN or Inf"):
        ShardDataset.from_path(tmp_path / "nan")

    write_shard(tmp_path / "mixed" / "a.h5", data)
    write_shard(tmp_path / "mixed" / "b.h5", toy_lensdata(2, size=16, seed=0))
    with pytest.raises(DataError, match=r"b\.h5: image size"):
        ShardDataset.from_path(tmp_path / "mixed")

    path = write_shard(tmp_path / "flip" / "s.h5", data)
    with h5py.File(path, "r") as f:
        offset = f["images"].id.get_chunk_info(0).byte_offset
    raw = bytearray(path.read_bytes())
    raw[offset + 100] ^= 0xFF  # one flipped byte inside the image data
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"s\.h5: corrupt HDF5 shard.*checksum"):
        ShardDataset.from_path(tmp_path / "flip")


def _train(data, out, *extra):
    return main(["train", "--detector", "dcae", "--data", str(data), "--out", str(out),
                 "--epochs", "2", "--batch-size", "16", "--seed", "4", "--no-progress",
                 "--config", '{"latent_dim": 16}', *extra])


def test_train_on_shards_streams_and_matches_the_loaded_run(shard_dir, tmp_path, monkeypatch):
    streamed, loaded = tmp_path / "streamed", tmp_path / "loaded"
    args = ("--normalise", "standard")
    assert _train(shard_dir, streamed, *args, "--shard-cache-mb", "0.05") == 0
    with monkeypatch.context() as m:  # the former path: the whole data set in memory
        m.setattr(train_cmd, "is_shard_path", lambda path: False)
        assert _train(shard_dir, loaded, *args) == 0
    cs, cl = (json.loads((r / "config.json").read_text()) for r in (streamed, loaded))
    assert cs["data"]["streamed"] is True and cl["data"]["streamed"] is False
    assert cs["data"]["fingerprint"] == cl["data"]["fingerprint"]
    assert cs["split"] == cl["split"]
    # the streamed fit of mean and std is exact up to float64 rounding; the images are
    # normalised with float32 copies of them, which agree, so training is bit for bit the same
    for key in ("mean", "std"):
        assert cs["normaliser"][key] == pytest.approx(cl["normaliser"][key], rel=1e-12)
        assert np.float32(cs["normaliser"][key]) == np.float32(cl["normaliser"][key])
    a = torch.load(streamed / "weights.pt", weights_only=True)
    b = torch.load(loaded / "weights.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # evaluate (which loads the data) recognises the training data by its fingerprint
    assert main(["evaluate", str(streamed), "--data", str(shard_dir)]) == 0
    metrics = json.loads((streamed / "metrics.json").read_text())
    assert "held-out" in metrics["test_set"]["images"]
