"""Images of any input, a batch at a time in bounded memory, with bad files reported by name.

``stream_images(path, batch_size)`` reads what ``load_dataset`` reads (a ``.npy`` image, a
folder of them, DeepLense class folders, HDF5 shards), in the same order, but yields
``ImageBatch``es of at most ``batch_size`` images instead of loading everything: memory stays
flat whatever the number of images (one batch, plus a name and a label per image kept by the
caller). ``labels.csv`` metadata are not read: scoring needs images, names and classes only.

Bad input (a truncated, pickled, NaN-holding or wrongly shaped ``.npy``; an unreadable shard,
or an image of a shard with NaN pixels; an image whose size differs from ``shape``) is, with
``on_bad="stop"`` (default), a ``DataError`` naming the file, and with ``on_bad="skip"`` a
``BadInput(name, reason)`` item in the stream, after which reading goes on.
``count_images(path)`` counts the images from file listings and shard headers (no pixels
read), for a progress bar. ``rebatch(items, batch_size)`` cuts a stream into batches of
exactly ``batch_size`` across file and shard boundaries, as batches of the loaded data would
be cut (for work whose result depends on the batches, such as seeded posterior draws).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from darklens.data.deeplense import class_folders, npy_files
from darklens.data.formats import SHARD_SUFFIXES, UNLABELLED, find_shards
from darklens.data.lensdata import CLASSES
from darklens.data.npy_safe import load_npy
from darklens.data.shards import _inspect, _read_labels
from darklens.errors import DataError

ON_BAD = ("skip", "stop")


@dataclass
class ImageBatch:
    """Up to ``batch_size`` images (B, 1, H, W) float32 with their names and labels."""

    images: np.ndarray
    names: list[str]
    labels: np.ndarray  # int64, UNLABELLED (-1) for images without a class
    class_names: tuple[str, ...]


@dataclass
class BadInput:
    """A file (or shard image) that could not be read: what and why."""

    name: str
    reason: str


def _sources(path: Path) -> tuple[str, list]:
    """('npy', [(file, label)]) or ('shards', [shard paths]) for an input path."""
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if path.is_file():
        if path.suffix.lower() in SHARD_SUFFIXES:
            return "shards", [path]
        if path.suffix.lower() == ".npy":
            return "npy", [(path, UNLABELLED)]
        raise DataError(f"{path}: unknown file type (expected an HDF5 shard .h5/.hdf5 or a "
                        ".npy image)")
    shards = find_shards(path)
    if shards:
        return "shards", shards
    folders = class_folders(path)
    if folders:
        return "npy", [(f, CLASSES.index(c)) for c in CLASSES if c in folders
                       for f in npy_files(folders[c])]
    files = [(f, UNLABELLED) for f in npy_files(path)] if any(
        p.suffix.lower() == ".npy" for p in path.iterdir()) else []
    if not files:
        raise DataError(f"{path}: nothing to load: no HDF5 shards (.h5), no class folders "
                        f"({', '.join(CLASSES)}) and no .npy images")
    return "npy", files


def count_images(path: str | os.PathLike) -> int:
    """How many images ``stream_images(path)`` will read (bad ones included)."""
    kind, sources = _sources(Path(path))
    if kind == "npy":
        return len(sources)
    total = 0
    for p in sources:
        try:
            total += _inspect(p).n
        except DataError:
            total += 0  # unreadable: reported when streamed
    return total


def stream_images(path: str | os.PathLike, batch_size: int = 256,
                  shape: tuple[int, ...] | None = None, on_bad: str = "stop"
                  ) -> Iterator[ImageBatch | BadInput]:
    """Batches of the images at ``path`` (see the module docstring).

    ``shape``: the (C, H, W) every image must have (default: the first image's).
    """
    if on_bad not in ON_BAD:
        raise ValueError(f"on_bad must be one of {ON_BAD}, not {on_bad!r}")
    kind, sources = _sources(Path(path))
    state = {"shape": tuple(shape) if shape is not None else None}
    if kind == "npy":
        yield from _stream_npy(sources, batch_size, state, on_bad)
    else:
        for shard in sources:
            yield from _stream_shard(shard, batch_size, state, on_bad)


def _bad(name: str, reason: str, on_bad: str) -> BadInput:
    if on_bad == "stop":
        raise DataError(f"{name}: {reason}")
    return BadInput(name, reason)


def _size_problem(image_shape: tuple[int, ...], state: dict) -> str | None:
    if state["shape"] is None:
        state["shape"] = image_shape
        return None
    if image_shape != state["shape"]:
        return f"images are {image_shape}, expected {state['shape']} (the run was trained " \
               f"on {state['shape']})"
    return None


def _stream_npy(files: list, batch_size: int, state: dict, on_bad: str
                ) -> Iterator[ImageBatch | BadInput]:
    images: list[np.ndarray] = []
    names: list[str] = []
    labels: list[int] = []
    for file, label in files:
        try:
            image = load_npy(file)[None]
        except DataError as err:
            yield _bad(str(file), str(err).removeprefix(f"{file}: "), on_bad)
            continue
        problem = _size_problem(tuple(image.shape), state)
        if problem:
            yield _bad(str(file), problem, on_bad)
            continue
        images.append(image)
        names.append(str(file))
        labels.append(label)
        if len(images) == batch_size:
            yield ImageBatch(np.stack(images), names, np.array(labels, np.int64), CLASSES)
            images, names, labels = [], [], []
    if images:
        yield ImageBatch(np.stack(images), names, np.array(labels, np.int64), CLASSES)


def _stream_shard(path: Path, batch_size: int, state: dict, on_bad: str
                  ) -> Iterator[ImageBatch | BadInput]:
    try:
        shard = _inspect(path)
        labels = _read_labels(shard)
        problem = _size_problem(shard.image_shape, state)
        if problem:
            raise DataError(f"{path}: {problem}")
        f = h5py.File(path, "r")
    except (DataError, OSError) as err:
        yield _bad(str(path), str(err).removeprefix(f"{path}: "), on_bad)
        return
    with f:
        for lo in range(0, shard.n, batch_size):
            hi = min(shard.n, lo + batch_size)
            try:
                block = np.asarray(f["images"][lo:hi], dtype=np.float32)
                readable = np.ones(hi - lo, dtype=bool)
            except (OSError, KeyError, ValueError, TypeError):
                block, readable = _read_one_by_one(f, lo, hi, shard.image_shape)
            finite = np.isfinite(block.reshape(hi - lo, -1)).all(axis=1) & readable
            start = 0  # good runs between bad images, in file order
            for k in [*np.flatnonzero(~finite).tolist(), hi - lo]:
                if k > start:
                    yield ImageBatch(block[start:k], [f"{path}[{lo + j}]" for j in range(start, k)],
                                     labels[lo + start:lo + k], shard.class_names)
                if k < hi - lo:
                    why = "NaN or Inf pixel values" if readable[k] else \
                        "unreadable data or failed checksum"
                    yield _bad(f"{path}[{lo + k}]", why, on_bad)
                start = k + 1


def _read_one_by_one(f: h5py.File, lo: int, hi: int, image_shape: tuple[int, ...]
                     ) -> tuple[np.ndarray, np.ndarray]:
    """A block read image by image, so that one corrupt chunk loses only its own images."""
    block = np.zeros((hi - lo, *image_shape), np.float32)
    ok = np.zeros(hi - lo, dtype=bool)
    for k in range(hi - lo):
        try:
            block[k] = f["images"][lo + k]
            ok[k] = True
        except (OSError, KeyError, ValueError, TypeError):
            continue  # reported by the caller as unreadable
    return block, ok


def rebatch(items: Iterable[ImageBatch | BadInput], batch_size: int
            ) -> Iterator[ImageBatch | BadInput]:
    """The images of ``items`` in batches of exactly ``batch_size`` (the last may be shorter),
    across file and shard boundaries: image k of the stream lands in batch k // batch_size, as
    in ``load_dataset``'s data cut into batches. A ``BadInput`` passes through in its place:
    the images before it first (as a shorter batch, so the order is kept); so do images whose
    ``class_names`` differ from those before them. At most two batches are held."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    held: list[ImageBatch] = []
    n_held = 0

    def joined() -> ImageBatch:
        first = held[0]
        if len(held) == 1:
            return first
        return ImageBatch(np.concatenate([b.images for b in held]),
                          [n for b in held for n in b.names],
                          np.concatenate([b.labels for b in held]), first.class_names)

    for item in items:
        if held and (isinstance(item, BadInput) or item.class_names != held[0].class_names):
            yield joined()
            held, n_held = [], 0
        if isinstance(item, BadInput):
            yield item
            continue
        held.append(item)
        n_held += len(item.names)
        if n_held >= batch_size:
            whole = joined()
            for lo in range(0, n_held - batch_size + 1, batch_size):
                yield ImageBatch(whole.images[lo:lo + batch_size],
                                 whole.names[lo:lo + batch_size],
                                 whole.labels[lo:lo + batch_size], whole.class_names)
            rest = n_held % batch_size
            held = [ImageBatch(whole.images[n_held - rest:].copy(), whole.names[n_held - rest:],
                               whole.labels[n_held - rest:], whole.class_names)] if rest else []
            n_held = rest
    if held:
        yield joined()


@dataclass
class Scan:
    """What one streaming pass learns of a data set without keeping its images."""

    labels: np.ndarray  # int64, one per image, in order
    class_names: tuple[str, ...]
    names: list[str]
    fingerprint: str  # as darklens.data.fingerprint.fingerprint of the loaded data


def scan_images(path: str | os.PathLike, batch_size: int = 256,
                shape: tuple[int, ...] | None = None) -> Scan:
    """Labels, names and the data fingerprint of ``path`` in one bounded-memory pass: the
    SHA-256 of the float32 images then the int64 labels, fed the same bytes in the same order
    as ``fingerprint(load_dataset(path))``. Any bad file is a ``DataError``."""
    h = hashlib.sha256()
    labels: list[np.ndarray] = []
    names: list[str] = []
    class_names: tuple[str, ...] = CLASSES
    for batch in stream_images(path, batch_size, shape, on_bad="stop"):
        assert isinstance(batch, ImageBatch)  # on_bad="stop" raises instead
        h.update(np.ascontiguousarray(batch.images, dtype=np.float32))  # no bytes copy
        labels.append(batch.labels)
        names.extend(batch.names)
        class_names = batch.class_names
    all_labels = np.concatenate(labels) if labels else np.zeros(0, np.int64)
    h.update(np.ascontiguousarray(all_labels, dtype=np.int64).tobytes())
    return Scan(all_labels, tuple(class_names), names, h.hexdigest())
