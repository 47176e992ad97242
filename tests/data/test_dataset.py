"""ImageDataset, normalisation and the deterministic splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from darklens.data.dataset import ImageDataset, Normaliser, anomaly_split, split_indices
from darklens.data.lensdata import LensData


def test_items_are_tensors_and_labels(lens_data: LensData) -> None:
    ds = ImageDataset(lens_data)
    assert len(ds) == 9
    image, label = ds[4]
    assert image.dtype == torch.float32 and image.shape == (1, 16, 16)
    assert label == 1 and isinstance(label, int)
    assert torch.equal(image, torch.from_numpy(lens_data.images[4]))


def test_targets_and_subset(lens_data: LensData) -> None:
    ds = ImageDataset(lens_data, indices=[8, 0], targets=("theta_e", "n_subhalos"))
    image, label, target = ds[0]
    assert len(ds) == 2 and label == 2 and target.dtype == torch.float32
    expected = [lens_data.metadata["theta_e"][8], lens_data.metadata["n_subhalos"][8]]
    np.testing.assert_allclose(target.numpy(), expected, rtol=1e-6)
    with pytest.raises(KeyError, match="subhalo_mass"):  # 2-D columns are not targets
        ImageDataset(lens_data, targets=("subhalo_mass",))


def test_dataloader_batches(lens_data: LensData) -> None:
    loader = DataLoader(ImageDataset(lens_data, normaliser=Normaliser("minmax")), batch_size=4)
    images, labels = next(iter(loader))
    assert images.shape == (4, 1, 16, 16) and labels.tolist() == [0, 0, 0, 1]


def test_minmax_is_per_image(lens_data: LensData) -> None:
    norm = Normaliser.fit("minmax")
    out = norm(lens_data.images * 7 + 3)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.min(axis=(-2, -1)), 0, atol=1e-6)
    np.testing.assert_allclose(out.max(axis=(-2, -1)), 1, atol=1e-6)
    np.testing.assert_allclose(out, norm(lens_data.images), atol=1e-5)  # scale-free
    assert (norm(np.full((4, 4), 2.0)) == 0).all()  # a constant image does not divide by zero


def test_standard_fits_on_training_images_only(lens_data: LensData) -> None:
    split = split_indices(lens_data.labels, (0.34, 0.33, 0.33), seed=1)
    train = lens_data.images[split.train]
    norm = Normaliser.fit("standard", train)
    assert norm.mean == pytest.approx(train.astype(np.float64).mean())
    assert norm.std == pytest.approx(train.astype(np.float64).std())
    test_images = lens_data.images[split.test] + 5.0  # shifted: must NOT be re-centred
    np.testing.assert_allclose(
        norm(test_images), (test_images - norm.mean) / norm.std, rtol=1e-5, atol=1e-5
    )
    assert norm(test_images).mean() > 4
    assert Normaliser.from_dict(norm.to_dict()) == norm
    with pytest.raises(ValueError, match="needs training images"):
        Normaliser.fit("standard")
    with pytest.raises(ValueError, match="normalisation must be one of"):
        Normaliser("zscore")


def test_none_is_identity(lens_data: LensData) -> None:
    assert np.array_equal(Normaliser("none")(lens_data.images), lens_data.images)


def test_split_is_deterministic_disjoint_and_stratified() -> None:
    labels = np.repeat([0, 1, 2], [100, 50, 30])
    a = split_indices(labels, (0.6, 0.2, 0.2), seed=7)
    b = split_indices(labels, (0.6, 0.2, 0.2), seed=7)
    c = split_indices(labels, (0.6, 0.2, 0.2), seed=8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a.train, c.train)
    joined = np.concatenate(a)
    assert len(joined) == len(labels) and len(np.unique(joined)) == len(labels)
    assert np.bincount(labels[a.train]).tolist() == [60, 30, 18]
    assert np.bincount(labels[a.val]).tolist() == [20, 10, 6]
    assert np.bincount(labels[a.test]).tolist() == [20, 10, 6]
    plain = split_indices(labels, (0.5, 0.25, 0.25), seed=7, stratify=False)
    assert [len(p) for p in plain] == [90, 45, 45]
    with pytest.raises(ValueError, match="summing to 1"):
        split_indices(labels, (0.5, 0.5, 0.5))


def test_anomaly_split_trains_on_normal_only(make_lens_data) -> None:
    data = make_lens_data(n_per_class=20, size=8)
    split = anomaly_split(data, normal="no_sub", fractions=(0.5, 0.25, 0.25), seed=3)
    assert set(data.labels[split.train]) == {0} and len(split.train) == 10
    assert set(data.labels[split.val]) == {0, 1, 2}
    assert set(data.labels[split.test]) == {0, 1, 2}
    assert np.bincount(data.labels[split.test]).tolist() == [5, 10, 10]
    joined = np.concatenate(split)
    assert sorted(joined.tolist()) == list(range(len(data)))  # every image used exactly once
    again = anomaly_split(data, normal="no_sub", fractions=(0.5, 0.25, 0.25), seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(split, again, strict=True))
    no_sub_train = ImageDataset(data, indices=split.train)
    assert {no_sub_train[i][1] for i in range(len(no_sub_train))} == {0}
