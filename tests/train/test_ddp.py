"""Data-parallel training: two gloo processes under torchrun end with identical weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from darklens.data.formats import write_deeplense_folder
from toy_lenses import toy_lensdata

WORKER = Path(__file__).resolve().parents[1] / "ddp_worker.py"  # beside toy_lenses.py


def test_two_process_ddp_run_keeps_ranks_identical(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(WORKER.parent), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(WORKER), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]

    reports = [json.loads((tmp_path / f"report_rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in reports] == [2, 2]
    for name in ("dcae", "aae"):
        w0 = torch.load(tmp_path / f"{name}_rank0.pt", weights_only=True)
        w1 = torch.load(tmp_path / f"{name}_rank1.pt", weights_only=True)
        init0 = torch.load(tmp_path / f"{name}_init_rank0.pt", weights_only=True)
        init1 = torch.load(tmp_path / f"{name}_init_rank1.pt", weights_only=True)
        for key in w0:
            assert torch.equal(w0[key], w1[key]), f"{name}: {key} differs between ranks"
        # the ranks really started apart, and training really moved the weights
        assert any(not torch.equal(init0[k], init1[k]) for k in init0)
        assert any(not torch.equal(w0[k], init0[k]) for k in w0)
        assert all(r[name]["epochs"] == 2 for r in reports)
        # each rank's training loss is the mean over its own shard of the data
        losses = [r[name]["history"][0].get("train_loss", r[name]["history"][0].get("train_ae"))
                  for r in reports]
        assert losses[0] != losses[1]
        assert (tmp_path / name / "checkpoint.pt").is_file()  # written by rank 0


def test_darklens_train_under_torchrun(tmp_path):
    write_deeplense_folder(tmp_path / "data", toy_lensdata(40, size=32, seed=0))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "darklens.cli", "train", "--detector", "dcae", "--data", str(tmp_path / "data"),
           "--out", str(tmp_path / "run"), "--epochs", "2", "--batch-size", "8",
           "--no-progress", "--config", '{"latent_dim": 8}']
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["world_size"] == 2 and config["result"]["epochs_run"] == 2
