"""Run under torchrun by test_ddp.py: train tiny detectors data-parallel, save each rank's weights.

Each rank starts from different random weights on purpose: ``fit`` must broadcast rank 0's,
and DDP must keep the ranks in step, for the final weights to agree.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import TensorDataset

from darklens.models.base import create_detector
from darklens.train import distributed as dd
from darklens.train.loop import TrainConfig, fit
from toy_lenses import rings


def main(out: Path) -> None:
    assert dd.init_from_env("gloo")
    rank = dd.rank()
    images = torch.from_numpy(rings(64, 32, seed=0))
    data = TensorDataset(images, torch.zeros(64, dtype=torch.long))
    val = TensorDataset(images[:16], torch.zeros(16, dtype=torch.long))
    report = {"rank": rank, "world_size": dd.world_size()}
    for name in ("dcae", "aae"):
        torch.manual_seed(100 + rank)
        det = create_detector(name, image_size=32, latent_dim=8)
        initial = {k: v.clone() for k, v in det.state_dict().items()}
        result = fit(det, data, val, TrainConfig(epochs=2, batch_size=8, seed=3, progress=False,
                                                 out_dir=str(out / name)))
        torch.save(det.state_dict(), out / f"{name}_rank{rank}.pt")
        torch.save(initial, out / f"{name}_init_rank{rank}.pt")
        report[name] = {"epochs": result.epochs_run, "history": result.history}
    (out / f"report_rank{rank}.json").write_text(json.dumps(report))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
