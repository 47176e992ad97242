"""`darklens score --on-bad-file skip|stop` on a folder with bad files among good ones.

skip: every bad file is named (with its cause) on stderr and listed in the CSV with flag
``skipped``; the good images are scored as if the bad ones were not there. stop (the
default): one line naming the first bad file, exit 2, and the CSV is not written (an
existing one is left as it was; no temp file stays behind).
"""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from bad_npy import npy_bytes, pickled_npy
from darklens.cli import main
from darklens.data.formats import write_deeplense_folder, write_shard
from toy_lenses import toy_lensdata

SIZE = 16


BAD = {  # file name -> (bytes, words of the cause)
    "a_nan.npy": (npy_bytes(np.full((SIZE, SIZE), np.nan, np.float32)), "NaN"),
    "b_truncated.npy": (npy_bytes(np.ones((SIZE, SIZE), np.float32))[:-7], "truncated"),
    "c_pickled.npy": (pickled_npy(np.zeros((SIZE, SIZE), np.float32)),
                      "--trust-pickle"),
    "d_big.npy": (npy_bytes(np.ones((SIZE + 8, SIZE + 8), np.float32)), "the run was trained on"),
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    write_deeplense_folder(root / "train", toy_lensdata(30, size=SIZE, seed=0))
    run = root / "run"
    assert main(["train", "--detector", "knn", "--data", str(root / "train"), "--out",
                 str(run), "--no-progress"]) == 0
    write_deeplense_folder(root / "new", toy_lensdata(3, size=SIZE, seed=9))
    for name, (raw, _) in BAD.items():
        (root / "new" / "cdm" / name).write_bytes(raw)
    return root, run


def _rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_skip_names_every_bad_file_and_scores_the_rest(setup, tmp_path, capsys):
    root, run = setup
    out = tmp_path / "scores.csv"
    capsys.readouterr()
    assert main(["score", str(run), str(root / "new"), "--csv", str(out),
                 "--on-bad-file", "skip"]) == 0
    err = [line for line in capsys.readouterr().err.splitlines()
           if line.startswith("darklens score: warning: skipped")]
    assert len(err) == 1 and "skipped 4 bad file(s)" in err[0]
    for name, (_, cause) in BAD.items():
        assert name in err[0] and cause in err[0], (name, err[0])
    rows = _rows(out)
    skipped = [r for r in rows if r["flag"] == "skipped"]
    assert sorted(r["source"].rsplit("/", 1)[1] for r in skipped) == sorted(BAD)
    assert all(r["score"] == "" and r["p_value"] == "" for r in skipped)
    good = [r for r in rows if r["flag"] == "ok"]
    assert len(good) == 9 and all(np.isfinite(float(r["score"])) for r in good)
    # the good images score as they do without the bad files beside them
    clean = tmp_path / "clean"
    write_deeplense_folder(clean, toy_lensdata(3, size=SIZE, seed=9))
    assert main(["score", str(run), str(clean), "--csv", str(tmp_path / "c.csv")]) == 0
    assert [r["score"] for r in _rows(tmp_path / "c.csv")] == [r["score"] for r in good]


def test_stop_is_one_line_and_writes_nothing(setup, tmp_path, capsys):
    root, run = setup
    out = tmp_path / "scores.csv"
    out.write_text("earlier results\n")
    capsys.readouterr()
    assert main(["score", str(run), str(root / "new"), "--csv", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("darklens score: error: ")
    assert "a_nan.npy" in err[0] and "NaN" in err[0]  # the first bad file, in file order
    assert out.read_text() == "earlier results\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.csv"]


def test_skip_in_a_shard_loses_only_the_bad_image(setup, tmp_path, capsys):
    _, run = setup
    data = toy_lensdata(4, size=SIZE, seed=3)
    data.images[5, 0, 2, 2] = np.nan
    shard = write_shard(tmp_path / "s.h5", data)
    capsys.readouterr()
    assert main(["score", str(run), str(shard), "--on-bad-file", "skip"]) == 0
    printed = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(printed.out)))
    assert len(rows) == 12 and rows[5]["flag"] == "skipped"
    assert rows[5]["source"] == f"{shard}[5]" and f"{shard}[5] (NaN" in printed.err
    assert sum(r["flag"] == "ok" for r in rows) == 11
    assert main(["score", str(run), str(shard)]) == 2
    assert f"{shard}[5]: NaN" in capsys.readouterr().err
