"""Counter-based random numbers: each draw is a pure function of (seed, class, image, stream, k).

An image therefore gets the same random numbers whatever the batch size, worker count or
shard split that renders it, and no generator state is passed around. The mixer is a 32-bit
integer hash (Wellons' "lowbias32" family, with both multipliers below 2**31 so products fit
in int64 without overflow) applied twice with two keys, which breaks any structure between the
streams of different images.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_MASK = 0xFFFFFFFF
STREAMS = {"params": 1, "subhalos": 2, "noise": 3, "source": 4, "vortex": 5}


def _mix(x: Tensor) -> Tensor:
    x = x & _MASK
    x = x ^ (x >> 16)
    x = (x * 0x21F0AAAD) & _MASK
    x = x ^ (x >> 15)
    x = (x * 0x735A2D97) & _MASK
    return x ^ (x >> 15)


def image_keys(seed: int, class_id: int, index: Tensor, stream: str) -> tuple[Tensor, Tensor]:
    """Two 32-bit keys (B,) for the images ``index`` (int64) of one class and stream."""
    base = _mix(torch.tensor([seed & _MASK], dtype=torch.int64))
    base = _mix(base ^ (seed >> 32) ^ (class_id * 0x9E3779B))
    base = _mix(base ^ STREAMS[stream] * 0x85EBCA6)
    ka = _mix(base ^ (index.to(torch.int64) & _MASK))
    kb = _mix(ka ^ 0x5BD1E995 ^ (index.to(torch.int64) >> 32))
    return ka, kb


def uniforms(
    seed: int, class_id: int, index: Tensor, stream: str, n: int, dtype=torch.float64
) -> Tensor:
    """Uniform draws in (0, 1), shape (B, n): draw k of image b depends only on its identity."""
    ka, kb = image_keys(seed, class_id, index, stream)
    k = torch.arange(n, dtype=torch.int64).view(1, -1)
    h = _mix(_mix(k ^ ka.view(-1, 1)) ^ kb.view(-1, 1))
    return (h.to(dtype) + 0.5) / 2.0**32


def normals(
    seed: int, class_id: int, index: Tensor, stream: str, n: int, dtype=torch.float32
) -> Tensor:
    """Standard normal draws (B, n) by Box-Muller on counter-based uniforms."""
    m = (n + 1) // 2
    u = uniforms(seed, class_id, index, stream, 2 * m)
    r = torch.sqrt(-2.0 * torch.log(u[:, :m]))
    t = 2.0 * math.pi * u[:, m:]
    z = torch.cat([r * torch.cos(t), r * torch.sin(t)], dim=1)
    return z[:, :n].to(dtype)
