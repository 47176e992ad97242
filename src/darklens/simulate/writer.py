"""Simulate a data set to disk in chunks: HDF5 shards or DeepLense class folders.

Images are cut into chunks of ``chunk_size`` per class; chunk ``k`` of class ``c`` holds the images
``k * chunk_size ...`` and is written atomically, so a rerun skips finished chunks and an
interrupted one leaves nothing half-written. ``shard=(i, n)`` keeps the chunks with ``k % n == i``,
so separate processes or nodes write disjoint parts of one data set. Because every image is a
pure function of (preset, seed, class, index), the result does not depend on the split.
"""

from __future__ import annotations

import fcntl
import multiprocessing as mp
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from darklens import __version__
from darklens.data.deeplense import write_deeplense_folder
from darklens.data.hdf5 import write_shard
from darklens.data.lensdata import CLASSES, LensData
from darklens.io import write_json_atomic, write_text_atomic
from darklens.simulate.backend import backend_for_job, paths_since, requested_backend, usage
from darklens.simulate.parameters import CLASS_IDS
from darklens.simulate.presets import Preset, from_dict
from darklens.simulate.simulator import simulate_batch


@dataclass(frozen=True)
class Chunk:
    class_name: str
    number: int
    start: int
    stop: int


def plan_chunks(
    classes: Iterable[str], n_per_class: int, chunk_size: int, shard: tuple[int, int] = (0, 1)
) -> list[Chunk]:
    """The chunks this process is responsible for."""
    i, n = shard
    if not (0 <= i < n):
        raise ValueError(f"shard must be I/N with 0 <= I < N, got {i}/{n}")
    chunks = []
    for c in classes:
        for k, lo in enumerate(range(0, n_per_class, chunk_size)):
            if k % n == i:
                chunks.append(Chunk(c, k, lo, min(lo + chunk_size, n_per_class)))
    return chunks


def chunk_path(out: Path, chunk: Chunk, fmt: str) -> Path:
    """Where a finished chunk is recorded: the shard itself, or a marker for .npy folders."""
    if fmt == "hdf5":
        return out / chunk.class_name / f"shard-{chunk.number:05d}.h5"
    return out / ".done" / f"{chunk.class_name}-{chunk.number:05d}"


def render_chunk(
    preset_dict: dict, seed: int, chunk: Chunk, batch_size: int, backend: str | None = None
) -> LensData:
    """Render one chunk (runs in a worker process too); ``backend`` as in ``simulate_batch``."""
    preset = from_dict(preset_dict)
    images, metas = [], []
    before = Counter(usage)
    for lo in range(chunk.start, chunk.stop, batch_size):
        idx = np.arange(lo, min(lo + batch_size, chunk.stop))
        img, meta = simulate_batch(preset, chunk.class_name, idx, seed, backend=backend)
        images.append(img.numpy())
        metas.append(meta)
    meta = {k: np.concatenate([m[k] for m in metas]) for k in metas[0]}
    labels = meta.pop("label")
    attrs = {
        "preset": preset_dict,
        "seed": seed,
        "darklens_version": __version__,
        "class_name": chunk.class_name,
        "chunk": chunk.number,
        "simulator_backend": paths_since(before),  # compiled or eager (see simulator)
    }
    return LensData(np.concatenate(images), labels, CLASSES, meta, attrs)


def _write(out: Path, chunk: Chunk, data: LensData, fmt: str) -> None:
    if fmt == "hdf5":
        write_shard(chunk_path(out, chunk, fmt), data)
        return
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".labels.lock", "w") as lock:  # several shard processes may share labels.csv
        fcntl.flock(lock, fcntl.LOCK_EX)
        write_deeplense_folder(out, data)
    write_text_atomic(chunk_path(out, chunk, fmt), f"{chunk.stop - chunk.start}\n")


def _worker_init() -> None:
    torch.set_num_threads(1)


def _render_star(args: tuple) -> tuple[Chunk, LensData]:
    preset_dict, seed, chunk, batch_size, backend = args
    return chunk, render_chunk(preset_dict, seed, chunk, batch_size, backend)


def simulate_to_disk(
    preset: Preset,
    out: str | Path,
    n_per_class: int,
    seed: int,
    classes: Iterable[str] = CLASSES,
    fmt: str = "hdf5",
    chunk_size: int = 1000,
    shard: tuple[int, int] = (0, 1),
    workers: int = 1,
    batch_size: int = 128,
    progress: Callable[[int], None] | None = None,
    backend: str | None = None,
) -> dict:
    """Write the data set; return a summary (chunks written and skipped, image count).

    ``backend`` chooses the rendering path (``auto``/``eager``/``compiled``, default
    ``$DARKLENS_SIM_BACKEND`` or auto); each shard records the path it took.
    """
    if fmt not in ("hdf5", "npy"):
        raise ValueError(f"format must be hdf5 or npy, got {fmt!r}")
    classes = list(classes)
    for c in classes:
        if c not in CLASS_IDS:
            raise ValueError(f"unknown class {c!r}; known: {', '.join(CLASSES)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    backend = backend_for_job(backend, n_per_class * len(classes))
    manifest = {
        "preset": preset.to_dict(),
        "seed": seed,
        "n_per_class": n_per_class,
        "classes": classes,
        "format": fmt,
        "chunk_size": chunk_size,
        "darklens_version": __version__,
        # the path requested (auto/eager/compiled); each shard records the one it took
        "simulator_backend": requested_backend(backend),
    }
    write_json_atomic(out / "simulation.json", manifest)
    chunks = plan_chunks(classes, n_per_class, chunk_size, shard)
    todo = [c for c in chunks if not chunk_path(out, c, fmt).exists()]
    skipped = len(chunks) - len(todo)
    if progress:
        progress(sum(c.stop - c.start for c in chunks if c not in todo))
    jobs = [(preset.to_dict(), seed, c, batch_size, backend) for c in todo]
    if workers > 1 and len(jobs) > 1:
        ctx = mp.get_context("spawn")
        with ctx.Pool(workers, initializer=_worker_init) as pool:
            for chunk, data in pool.imap_unordered(_render_star, jobs):
                _write(out, chunk, data, fmt)
                if progress:
                    progress(chunk.stop - chunk.start)
    else:
        for job in jobs:
            chunk, data = _render_star(job)
            _write(out, chunk, data, fmt)
            if progress:
                progress(chunk.stop - chunk.start)
    return {
        "written": len(todo),
        "skipped": skipped,
        "images": sum(c.stop - c.start for c in chunks),
    }
