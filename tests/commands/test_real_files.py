"""`darklens score` and `darklens regress predict` on real DeepLense files as published.

The three real 64x64 images of ``deeplense-reference/images`` (nosub, cdm, axion: plain
float64 ``.npy`` arrays, per-image min-max normalised) are given one by one and as a class-folder
tree with DeepLense's own folder spellings.
"""

from __future__ import annotations

import csv
import io
import shutil

import numpy as np
import pytest

from darklens.cli import main
from darklens.data.formats import write_shard
from darklens.simulate.simulator import simulate_dataset
from reference import deeplense_reference

IMAGES = deeplense_reference() / "images"
NAMES = ("nosub", "cdm", "axion")
pytestmark = pytest.mark.skipif(not IMAGES.is_dir(),
                                reason="DeepLense reference images not available")


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """The real files, alone and as a DeepLense tree (folders no_substructure, sub, axion)."""
    root = tmp_path_factory.mktemp("real")
    files = [IMAGES / f"{n}.npy" for n in NAMES]
    for n, folder in zip(NAMES, ("no_substructure", "sub", "axion"), strict=True):
        (root / "tree" / folder).mkdir(parents=True)
        shutil.copy(IMAGES / f"{n}.npy", root / "tree" / folder / f"{n}.npy")
    return root, files


def test_published_files_are_float64_64x64(real):
    _, files = real
    for f in files:
        a = np.load(f, allow_pickle=False)
        assert a.shape == (64, 64) and a.dtype == np.float64


def test_score_real_files(real, tmp_path, capsys):
    root, files = real
    data = tmp_path / "train"
    write_shard(data / "s.h5", simulate_dataset("demo", 60, seed=0, classes=("no_sub",)))
    run = tmp_path / "run"
    assert main(["train", "--detector", "knn", "--data", str(data), "--out", str(run),
                 "--config", '{"features": "pixels"}', "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["score", str(run), *map(str, files), str(root / "tree")]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 6
    assert [r["source"] for r in rows[:3]] == [str(f) for f in files]
    assert [r["class"] for r in rows[:3]] == ["", "", ""]  # single files carry no class
    assert [r["class"] for r in rows[3:]] == ["no_sub", "cdm", "vortex"]
    for r in rows:
        assert r["flag"] == "ok" and np.isfinite(float(r["score"]))
        assert 0 < float(r["p_value"]) <= 1 and r["anomalous"] in ("0", "1")
    # the same image scores the same alone and inside the tree, to float32 rounding: the
    # distance matrix is one matrix product, and BLAS may take another kernel for another
    # batch size (seen on an AVX-512 machine: 106.08673 against 106.08675)
    alone = np.array([float(r["score"]) for r in rows[:3]])
    np.testing.assert_allclose(alone, [float(r["score"]) for r in rows[3:]], rtol=1e-5)


def test_regress_predict_real_files(real, tmp_path, capsys):
    root, files = real
    data = tmp_path / "axion"
    assert main(["simulate", "--preset", "model-iii", "--n-per-class", "24", "--classes",
                 "vortex", "--out", str(data), "--seed", "1", "--set", "n_pix=64"]) == 0
    run = tmp_path / "reg"
    assert main(["regress", "train", "--data", str(data), "--out", str(run), "--target",
                 "log10_axion_mass", "--epochs", "1", "--batch-size", "8"]) == 0
    capsys.readouterr()
    assert main(["regress", "predict", str(run), *map(str, files), str(root / "tree"),
                 "--no-tta"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 6 and [r["file"] for r in rows[:3]] == [str(f) for f in files]
    for r in rows:
        assert np.isfinite(float(r["log10_axion_mass_mean"]))
        assert float(r["log10_axion_mass_sigma"]) > 0
