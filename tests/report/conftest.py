"""A tiny benchmark, run once for the report and benchmark tests (no simulator needed)."""

from __future__ import annotations

import pytest
from report_toy import BENCH_ARGS, toy_rings

from darklens.cli import main
from darklens.data.hdf5 import write_shard


@pytest.fixture(scope="session")
def toy_data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench-data")
    write_shard(root / "toy.h5", toy_rings(40))
    return root


@pytest.fixture(scope="session")
def bench_dir(toy_data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "b"
    assert main(["benchmark", "--data", str(toy_data_dir), "--out", str(out),
                 *BENCH_ARGS]) == 0
    return out
