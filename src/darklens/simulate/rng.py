"""Counter-based random numbers: each draw is a pure function of (seed, class, image, stream, k).

An image therefore gets the same random numbers whatever the batch size, worker count or
shard split that renders it, and no generator state is passed around. The mixer is a 32-bit
integer hash (Wellons' "lowbias32" family, with both multipliers below 2**31 so products fit
in int64 without overflow) applied twice with two keys, which breaks any structure between the
streams of different images.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

_MASK = 0xFFFFFFFF
STREAMS = {"params": 1, "subhalos": 2, "noise": 3, "source": 4, "vortex": 5}


def mix(x: Tensor) -> Tensor:
    """The 32-bit integer hash (int64 tensors carrying 32-bit values; any input bits)."""
    x = x & _MASK
    x = x ^ (x >> 16)
    x = (x * 0x21F0AAAD) & _MASK
    x = x ^ (x >> 15)
    x = (x * 0x735A2D97) & _MASK
    return x ^ (x >> 15)


def _mix_int(x: int) -> int:
    """:func:`mix` on one Python int (the same bits)."""
    x &= _MASK
    x ^= x >> 16
    x = (x * 0x21F0AAAD) & _MASK
    x ^= x >> 15
    x = (x * 0x735A2D97) & _MASK
    return x ^ (x >> 15)


@functools.lru_cache(maxsize=1024)
def _stream_key(seed: int, class_id: int, stream: str) -> int:
    """The key of one (seed, class, stream), before the image index is mixed in."""
    base = _mix_int(seed & _MASK)
    base = _mix_int(base ^ (seed >> 32) ^ (class_id * 0x9E3779B))
    return _mix_int(base ^ STREAMS[stream] * 0x85EBCA6)


def image_keys(seed: int, class_id: int, index: Tensor, stream: str) -> tuple[Tensor, Tensor]:
    """Two 32-bit keys (B,) for the images ``index`` (int64) of one class and stream."""
    base = _stream_key(seed, class_id, stream)
    ka = mix(base ^ (index.to(torch.int64) & _MASK))
    kb = mix(ka ^ 0x5BD1E995 ^ (index.to(torch.int64) >> 32))
    return ka, kb


def uniforms(
    seed: int, class_id: int, index: Tensor, stream: str, n: int, dtype=torch.float64
) -> Tensor:
    """Uniform draws in (0, 1), shape (B, n): draw k of image b depends only on its identity."""
    ka, kb = image_keys(seed, class_id, index, stream)
    k = torch.arange(n, dtype=torch.int64).view(1, -1)
    h = mix(mix(k ^ ka.view(-1, 1)) ^ kb.view(-1, 1))
    return (h.to(dtype) + 0.5) / 2.0**32


def normals(
    seed: int, class_id: int, index: Tensor, stream: str, n: int, dtype=torch.float32
) -> Tensor:
    """Standard normal draws (B, n) by Box-Muller on counter-based uniforms."""
    ka, kb = image_keys(seed, class_id, index, stream)
    return normals_from_keys(ka.view(-1, 1), kb.view(-1, 1), n, dtype)


def normals_from_keys(ka: Tensor, kb: Tensor, n: int, dtype=torch.float32) -> Tensor:
    """Standard normals (B, n) from the keys (B, 1) of :func:`image_keys`, computed in ``dtype``.

    Draw ``j < m = ceil(n / 2)`` is ``r_j cos t_j`` and draw ``m + j`` is ``r_j sin t_j``, with
    ``r_j = sqrt(-2 ln u_j)``, ``t_j = 2 pi u_{m+j}`` and ``u_k`` the k-th uniform of the stream:
    both Box-Muller outputs are used, one hash per normal. The compiled simulator traces this
    same function, so both paths draw the same integers.
    """
    m = (n + 1) // 2
    k = torch.arange(m, dtype=torch.int64, device=ka.device).view(1, -1)
    scale = 1.0 / 2.0**32
    u1 = (mix(mix(k ^ ka) ^ kb).to(dtype) + 0.5) * scale
    u2 = (mix(mix((k + m) ^ ka) ^ kb).to(dtype) + 0.5) * scale
    r = torch.sqrt(-2.0 * torch.log(u1))
    t = (2.0 * math.pi) * u2
    z = torch.cat([r * torch.cos(t), r * torch.sin(t)], dim=1)
    return z[:, :n] if 2 * m != n else z
