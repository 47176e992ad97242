"""Data-parallel helpers around ``torch.distributed`` (DDP under ``torchrun``, gloo on CPU).

``fit`` wraps the detector in ``DistributedDataParallel`` when a process group is initialised
(``init_from_env`` does that from torchrun's environment variables). Every rank sees a
different shard of each epoch (``DistributedSampler``); DDP averages gradients in backward.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def init_from_env(backend: str = "gloo") -> bool:
    """Join the process group that torchrun describes in the environment; False if none."""
    if is_distributed():
        return True
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return False
    dist.init_process_group(backend=backend)
    return True


def shutdown() -> None:
    """Leave the process group, if any."""
    if is_distributed():
        dist.destroy_process_group()


def broadcast_module(module: nn.Module, buffers_only: bool = False) -> None:
    """Copy rank 0's parameters and buffers (or buffers only) to every rank."""
    if not is_distributed():
        return
    tensors = list(module.buffers()) if buffers_only else list(module.state_dict().values())
    for t in tensors:
        if t.numel():
            dist.broadcast(t.data if isinstance(t, nn.Parameter) else t, src=0)


def any_rank(flag: bool) -> bool:
    """True if ``flag`` is True on any rank (so that every rank stops together)."""
    if not is_distributed():
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier() -> None:
    if is_distributed():
        dist.barrier()
