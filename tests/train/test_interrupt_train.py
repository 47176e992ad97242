"""A `darklens train` killed midway (SIGKILL) and resumed ends bitwise where an uninterrupted run
ends: same weights, same normal-score statistics, same losses, same `darklens evaluate` metrics.

The killed run is a subprocess on HDF5 shards (the streaming path); the resume and the
uninterrupted reference run in this process, all with one torch thread, so that the CPU kernels
reduce in the same order and the comparison can be exact. A partial checkpoint is never read as
complete: leftover temp files of an interrupted atomic write are ignored, and a truncated
checkpoint is refused with one clear line.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from darklens.cli import main
from darklens.data.formats import write_shard
from darklens.train.loop import CHECKPOINT, LOSS_CSV, load_checkpoint
from toy_lenses import toy_lensdata

EPOCHS = 4


def _train_args(data: Path, out: Path, resume: bool = False) -> list[str]:
    args = ["train", "--detector", "dcae", "--data", str(data), "--out", str(out),
            "--epochs", str(EPOCHS), "--seed", "0", "--batch-size", "16", "--normalise", "none",
            "--no-progress"]
    return [*args, "--resume"] if resume else args


@pytest.fixture
def one_thread():
    """One torch thread here, as in the subprocess (OMP_NUM_THREADS=1): same reduction order."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shards")
    data = toy_lensdata(300, size=64, seed=0)
    for k, lo in enumerate(range(0, len(data), 400)):  # three shards of 400, 400, 100 images
        write_shard(root / f"shard-{k:05d}.h5", data.select(slice(lo, lo + 400)))
    return root


def _losses(run: Path) -> list[dict[str, str]]:
    with open(run / LOSS_CSV) as fh:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(fh)]


def _kill_after_first_checkpoint(cmd: list[str], ckpt: Path) -> None:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, f"the run ended on its own: {err.decode()[-500:]}"


def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path, shards, one_thread):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    cmd = [sys.executable, "-m", "darklens.cli", *_train_args(shards, killed)]
    _kill_after_first_checkpoint(cmd, killed / CHECKPOINT)

    # The kill landed midway: a complete checkpoint of an early epoch, no finished run.
    ck = load_checkpoint(killed / CHECKPOINT)
    assert 1 <= ck["epoch"] < EPOCHS and len(ck["history"]) == ck["epoch"]
    assert not (killed / "weights.pt").exists() and not (killed / "config.json").exists()
    # A later write cut short leaves only a hidden temp file beside it: plant one (truncated
    # bytes of a real checkpoint, as SIGKILL during torch.save would leave) and a corrupt
    # temp file for the weights; the resume must not read either.
    good = (killed / CHECKPOINT).read_bytes()
    (killed / f".{CHECKPOINT}.k1ll3d.tmp").write_bytes(good[: len(good) // 2])
    (killed / ".weights.pt.k1ll3d.tmp").write_bytes(b"\x00" * 100)

    assert main(_train_args(shards, killed, resume=True)) == 0
    assert main(_train_args(shards, clean)) == 0

    a = torch.load(killed / "weights.pt", weights_only=True)
    b = torch.load(clean / "weights.pt", weights_only=True)
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"weights differ after resume: {differ}"
    assert _losses(killed) == _losses(clean) and len(_losses(clean)) == EPOCHS
    assert (json.loads((killed / "normal_stats.json").read_text())
            == json.loads((clean / "normal_stats.json").read_text()))
    ca, cb = (json.loads((r / "config.json").read_text()) for r in (killed, clean))
    assert ca["data"]["fingerprint"] == cb["data"]["fingerprint"]
    assert ca["split"] == cb["split"] and ca["result"]["best_epoch"] == cb["result"]["best_epoch"]

    for run in (killed, clean):
        assert main(["evaluate", str(run), "--data", str(shards)]) == 0
    ma, mb = (json.loads((r / "metrics.json").read_text()) for r in (killed, clean))
    ma["test_set"].pop("data", None), mb["test_set"].pop("data", None)
    assert ma == mb and ma["n"]["no_sub"] == 60  # 20% of 300 normal images held out
    assert ((killed / "test_scores.csv").read_text() == (clean / "test_scores.csv").read_text())


def test_a_truncated_checkpoint_is_refused_not_resumed(tmp_path, shards, capsys, one_thread):
    run = tmp_path / "run"
    args = _train_args(shards, run)
    args[args.index("--epochs") + 1] = "1"
    assert main(args) == 0
    good = (run / CHECKPOINT).read_bytes()
    (run / "config.json").unlink()  # as if the run had been killed after its checkpoint
    (run / CHECKPOINT).write_bytes(good[: len(good) // 3])  # a non-atomic writer's leftover
    capsys.readouterr()
    args = _train_args(shards, run, resume=True)
    args[args.index("--epochs") + 1] = "1"
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and CHECKPOINT in err[0] and "cannot be loaded safely" in err[0]
    assert "corrupt, truncated" in err[0]
    assert not (run / "config.json").exists()
