"""Progress bars in logs: one line per epoch or stage when stderr is not a terminal."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from darklens.data.formats import write_shard
from darklens.progress import LineProgress, progress_bar
from toy_lenses import toy_lensdata


def test_not_a_terminal_gives_one_line_per_stage():
    out = io.StringIO()  # not a tty
    bar = progress_bar(total=500, desc="dcae epoch 1/2", unit="step", file=out)
    assert isinstance(bar, LineProgress)
    for _ in range(500):
        bar.update(1)
        bar.set_postfix(loss="0.1")
    assert out.getvalue() == ""  # silent while it runs
    bar.close()
    bar.close()  # closing twice writes nothing more
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and "\r" not in out.getvalue()
    assert lines[0].startswith("dcae epoch 1/2: 500/500 step in ") and "(loss=0.1)" in lines[0]
    with progress_bar(range(7), desc="stage", file=out) as it:
        assert sum(1 for _ in it) == 7
    assert out.getvalue().splitlines()[-1].startswith("stage: 7/7 it")
    quiet = io.StringIO()
    progress_bar(total=3, file=quiet, disable=True).close()
    assert quiet.getvalue() == ""


@pytest.mark.slow  # a child process: about 20 s on a loaded 2-core machine
def test_train_log_has_one_line_per_epoch(tmp_path):
    data = tmp_path / "data"
    write_shard(data / "s.h5", toy_lensdata(60, size=32, seed=0))
    cmd = [sys.executable, "-m", "darklens.cli", "train", "--detector", "dcae", "--data",
           str(data), "--out", str(tmp_path / "run"), "--epochs", "3", "--batch-size", "8",
           "--config", '{"latent_dim": 8}']
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr
    epochs = [line for line in done.stderr.splitlines() if " epoch " in line]
    assert len(epochs) == 3, done.stderr
    assert epochs[0].startswith("dcae epoch 1/3: ") and "step in" in epochs[0]
