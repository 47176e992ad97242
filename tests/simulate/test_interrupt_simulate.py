"""A `darklens simulate` killed midway (SIGKILL) and rerun ends with the uninterrupted result."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from darklens.cli import main
from darklens.data.formats import load_dataset

ARGS = ["simulate", "--preset", "demo", "--n-per-class", "12", "--chunk-size", "2", "--seed", "9"]


def _shards(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*.h5") if not p.name.startswith("."))


def test_sigkill_then_rerun_gives_the_uninterrupted_data(tmp_path):
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "darklens.cli", *ARGS, "--out", str(killed)]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = time.time() + 120
    while len(_shards(killed)) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = _shards(killed)
    assert 0 < len(partial) < 18, "the kill should land midway"
    # whatever was left is complete: every visible shard reads, temp files are hidden
    for shard in partial:
        assert len(load_dataset(shard)) == 2
    assert main([*ARGS, "--out", str(killed)]) == 0
    assert main([*ARGS, "--out", str(tmp_path / "clean")]) == 0
    a, b = load_dataset(killed), load_dataset(tmp_path / "clean")
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    for key in ("theta_e", "substructure_chi2", "index"):
        np.testing.assert_array_equal(a.metadata[key], b.metadata[key])
