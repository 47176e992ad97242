"""Bad input through the command line: exit code 2, one line on stderr naming the file and the
cause, no traceback, and no half-written run. The readers' own corpus and fuzzing live in
``tests/data``; this checks that `darklens train` (which streams HDF5 shards) and `darklens
score` pass those errors on as the user should see them."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from bad_npy import npy_bytes, pickled_npy
from darklens.cli import main
from darklens.data.formats import write_deeplense_folder, write_shard
from darklens.data.lensdata import LensData
from toy_lenses import toy_lensdata

SIZE = 16


NPY = {  # one bad image among good ones in a DeepLense folder: (bytes, words of the cause)
    "nan": (npy_bytes(np.full((SIZE, SIZE), np.nan, np.float32)), "NaN"),
    "int": (npy_bytes(np.ones((SIZE, SIZE), np.int32)), "integer dtype"),
    "complex": (npy_bytes(np.ones((SIZE, SIZE), np.complex64)), "complex dtype"),
    "3d": (npy_bytes(np.ones((2, SIZE, SIZE), np.float32)), "wrong shape"),
    "zero-byte": (b"", "empty file"),
    "truncated": (npy_bytes(np.ones((SIZE, SIZE), np.float32))[:-7], "truncated"),
    "pickled": (pickled_npy(np.zeros((SIZE, SIZE), np.float32)), "--trust-pickle"),
    "huge-header": (b"\x93NUMPY\x01\x00\x76\x00{'descr': '<f8', 'fortran_order': False, "
                    b"'shape': (1000000, 1000000), }" + b" " * 54 + b"\n", "truncated"),
}


def _good() -> LensData:
    return toy_lensdata(4, size=SIZE, seed=0)


def _npy_case(root: Path, case: str) -> Path:
    write_deeplense_folder(root, _good())
    bad = root / "cdm" / "zz_bad.npy"
    bad.write_bytes(NPY[case][0])
    return bad


def _shard_case(root: Path, case: str) -> Path:
    data = _good()
    if case == "nan-shard":
        data.images[7, 0, 1, 1] = np.inf
        return write_shard(root / "s.h5", data)
    path = write_shard(root / "s.h5", data)
    if case == "flipped-byte":
        with h5py.File(path, "r") as f:
            offset = f["images"].id.get_chunk_info(0).byte_offset
        raw = bytearray(path.read_bytes())
        raw[offset + 64] ^= 0x55
        path.write_bytes(bytes(raw))
    elif case == "truncated-shard":
        path.write_bytes(path.read_bytes()[:2000])
    elif case == "mixed-sizes":
        return write_shard(root / "t.h5", toy_lensdata(2, size=SIZE + 4, seed=1))
    return path


SHARD = {"nan-shard": "NaN or Inf", "flipped-byte": "checksum",
         "truncated-shard": "not a readable HDF5 file", "mixed-sizes": "image size"}


def _one_error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"darklens {command}: error: ") and "Traceback" not in err[0]
    return err[0]


@pytest.mark.parametrize("case", sorted(NPY) + sorted(SHARD))
def test_train_on_bad_data_exits_2_naming_the_file(tmp_path, capsys, case):
    data = tmp_path / "data"
    if case in NPY:
        bad, cause = _npy_case(data, case), NPY[case][1]
    else:
        bad, cause = _shard_case(data, case), SHARD[case]
    out = tmp_path / "run"
    capsys.readouterr()
    assert main(["train", "--detector", "knn", "--data", str(data), "--out", str(out),
                 "--no-progress"]) == 2
    line = _one_error_line(capsys, "train")
    assert str(bad) in line and cause in line, line
    assert not out.exists() or not any(out.iterdir())  # nothing half-written


def test_score_on_bad_files_exits_2_naming_the_file(tmp_path, capsys):
    run = tmp_path / "run"
    write_deeplense_folder(tmp_path / "good", _good())
    assert main(["train", "--detector", "knn", "--data", str(tmp_path / "good"),
                 "--out", str(run), "--no-progress"]) == 0
    for case in ("nan", "pickled", "zero-byte"):
        bad = tmp_path / f"{case}.npy"
        bad.write_bytes(NPY[case][0])
        out_csv = tmp_path / f"{case}.csv"
        capsys.readouterr()
        assert main(["score", str(run), str(bad), "--csv", str(out_csv)]) == 2
        line = _one_error_line(capsys, "score")
        assert str(bad) in line and NPY[case][1] in line, line
        assert not out_csv.exists()
