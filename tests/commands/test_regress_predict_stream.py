"""`darklens regress predict` streams its inputs: the same CSV and draws as predicting the loaded
data in memory, and bad files handled as `darklens score` handles them (--on-bad-file)."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from bad_npy import npy_bytes, pickled_npy
from darklens.cli import main
from darklens.data.formats import load_dataset, write_deeplense_folder, write_shard
from darklens.data.lensdata import LensData
from darklens.models.regression_persistence import load_regression_run, predict_posteriors

QUANTILES = (0.025, 0.16, 0.5, 0.84, 0.975)
TARGET = "log10_axion_mass"
SIZE = 32


@pytest.fixture(scope="module")
def setup(tmp_path_factory, simulate_vortices):
    """A one-epoch regression run and 13 images of its kind, as shards of 5 and 8 images."""
    root = tmp_path_factory.mktemp("regstream")
    train = simulate_vortices(root / "train", 16, 1)
    run = root / "run"
    assert main(["regress", "train", "--data", str(train), "--out", str(run), "--target",
                 TARGET, "--epochs", "1", "--batch-size", "8"]) == 0
    data = load_dataset(simulate_vortices(root / "new", 13, 2))
    for k, (lo, hi) in enumerate(((0, 5), (5, 13))):
        write_shard(root / "shards" / f"shard-{k:05d}.h5",
                    LensData(data.images[lo:hi], data.labels[lo:hi]))
    return root, run, data.images


def _expected(run_dir, images, batch_size, n_samples, seed=0, tta=True):
    """The prediction of the whole array at once, in memory (the former `regress predict`)."""
    pred = predict_posteriors(load_regression_run(run_dir), images, tta=tta,
                              n_samples=n_samples, density=False, seed=seed,
                              batch_size=batch_size)
    quant = np.quantile(pred.samples, QUANTILES, axis=1)
    cells = [[repr(float(v)) for v in (pred.mean[i, 0], pred.var[i, 0] ** 0.5, *quant[:, i, 0])]
             for i in range(len(images))]
    return cells, pred.samples


def _rows(path) -> list[list[str]]:
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


@pytest.mark.parametrize("batch_size", [4, 256])
def test_shards_give_the_in_memory_csv_and_draws(setup, tmp_path, capsys, batch_size):
    root, run, images = setup
    out, draws = tmp_path / "p.csv", tmp_path / "d.npy"
    assert main(["regress", "predict", str(run), str(root / "shards"), "--csv", str(out),
                 "--samples", str(draws), "--n-samples", "32", "--batch-size",
                 str(batch_size), "--seed", "3"]) == 0
    rows = _rows(out)
    cells, samples = _expected(run, images, batch_size, 32, seed=3)
    assert rows[0][:2] == ["file", "index"] and len(rows) == 1 + len(images)
    # batches of 4 cut across the shards' boundary (5 + 8 images) as over the loaded data
    assert [r[2:] for r in rows[1:]] == cells
    assert [r[:2] for r in rows[1:]] == [[str(root / "shards"), str(i)]
                                        for i in range(len(images))]
    assert np.array_equal(np.load(draws, allow_pickle=False), samples)
    assert f"wrote {len(images)} predictions" in capsys.readouterr().err


def test_folder_of_files_names_each_file(setup, tmp_path, capsys):
    root, run, images = setup
    folder = tmp_path / "npy"
    folder.mkdir()
    for i, image in enumerate(images[:6]):
        np.save(folder / f"img{i:02d}.npy", image[0])
    capsys.readouterr()
    assert main(["regress", "predict", str(run), str(folder), "--no-tta", "--batch-size",
                 "4"]) == 0
    rows = list(csv.reader(capsys.readouterr().out.splitlines()))
    cells, _ = _expected(run, images[:6], 4, 256, tta=False)
    assert [r[2:] for r in rows[1:]] == cells
    assert [r[:2] for r in rows[1:]] == [[str(folder / f"img{i:02d}.npy"), str(i)]
                                        for i in range(6)]


BAD = {  # file name -> (bytes, words of the cause)
    "a_nan.npy": (npy_bytes(np.full((SIZE, SIZE), np.nan, np.float32)), "NaN"),
    "b_truncated.npy": (npy_bytes(np.ones((SIZE, SIZE), np.float32))[:-7], "truncated"),
    "c_pickled.npy": (pickled_npy(np.zeros((SIZE, SIZE), np.float32)), "--trust-pickle"),
    "d_big.npy": (npy_bytes(np.ones((SIZE + 8, SIZE + 8), np.float32)), "the run was trained on"),
}


@pytest.fixture
def bad_folder(setup, tmp_path):
    """A DeepLense folder of 6 good vortex images and the bad files of ``BAD`` among them."""
    _, _, images = setup
    good = LensData(images[:6], np.full(6, 2, np.int64))
    write_deeplense_folder(tmp_path / "clean", good)
    write_deeplense_folder(tmp_path / "new", good)
    for name, (raw, _) in BAD.items():
        (tmp_path / "new" / "vortex" / name).write_bytes(raw)
    return tmp_path


def test_skip_names_bad_files_and_predicts_the_rest(setup, bad_folder, capsys):
    _, run, _ = setup
    out, draws = bad_folder / "p.csv", bad_folder / "d.npy"
    capsys.readouterr()
    assert main(["regress", "predict", str(run), str(bad_folder / "new"), "--csv", str(out),
                 "--samples", str(draws), "--n-samples", "16", "--on-bad-file", "skip"]) == 0
    err = [line for line in capsys.readouterr().err.splitlines()
           if line.startswith("darklens regress predict: warning: skipped")]
    assert len(err) == 1 and "skipped 4 bad file(s)" in err[0]
    for name, (_, cause) in BAD.items():
        assert name in err[0] and cause in err[0], (name, err[0])
    rows = _rows(out)[1:]
    skipped = [r for r in rows if r[2] == ""]
    assert sorted(r[0].rsplit("/", 1)[1] for r in skipped) == sorted(BAD)
    assert all(set(r[2:]) == {""} for r in skipped)
    assert [r[1] for r in rows] == [str(i) for i in range(10)]  # position in the input
    samples = np.load(draws, allow_pickle=False)
    assert samples.shape == (10, 16, 1)
    empty = np.array([r[2] == "" for r in rows])
    assert np.isnan(samples[empty]).all() and np.isfinite(samples[~empty]).all()
    # the good images get the means and sigmas they get without the bad files beside them
    assert main(["regress", "predict", str(run), str(bad_folder / "clean"), "--csv",
                 str(bad_folder / "c.csv"), "--n-samples", "16"]) == 0
    clean = _rows(bad_folder / "c.csv")[1:]
    good = [r for r in rows if r[2] != ""]
    assert [r[0].rsplit("/", 1)[1] for r in good] == [r[0].rsplit("/", 1)[1] for r in clean]
    for a, b in zip(good, clean, strict=True):
        assert [float(v) for v in a[2:4]] == pytest.approx([float(v) for v in b[2:4]],
                                                          rel=1e-5)


def test_stop_is_one_line_and_writes_nothing(setup, bad_folder, capsys):
    _, run, _ = setup
    out = bad_folder / "p.csv"
    out.write_text("earlier results\n")
    before = sorted(p.name for p in bad_folder.iterdir())
    capsys.readouterr()
    assert main(["regress", "predict", str(run), str(bad_folder / "new"), "--csv", str(out),
                 "--samples", str(bad_folder / "d.npy")]) == 2
    printed = capsys.readouterr()
    err = printed.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("darklens regress: error: ")
    assert "a_nan.npy" in err[0] and "NaN" in err[0]  # the first bad file, in file order
    assert out.read_text() == "earlier results\n" and printed.out == ""
    assert sorted(p.name for p in bad_folder.iterdir()) == before  # no draws, no temp files


def test_skip_in_a_shard_loses_only_the_bad_image(setup, tmp_path, capsys):
    _, run, images = setup
    bad = images[:6].copy()
    bad[2, 0, 3, 3] = np.nan
    shard = write_shard(tmp_path / "s.h5", LensData(bad, np.full(6, 2, np.int64)))
    capsys.readouterr()
    assert main(["regress", "predict", str(run), str(shard), "--on-bad-file", "skip",
                 "--no-tta"]) == 0
    printed = capsys.readouterr()
    rows = list(csv.reader(printed.out.splitlines()))[1:]
    assert len(rows) == 6 and rows[2][:3] == [f"{shard}[2]", "2", ""]
    assert all(r[0] == str(shard) and r[2] != "" for k, r in enumerate(rows) if k != 2)
    assert f"{shard}[2] (NaN" in printed.err
    assert main(["regress", "predict", str(run), str(shard)]) == 2
    assert f"{shard}[2]: NaN" in capsys.readouterr().err
