"""HDF5 shards read lazily: labels up front, images on demand through a bounded cache.

``ShardDataset(paths)`` stands in for the ``LensData`` that ``load_dataset`` would build from
the same shards (same order: sorted paths, images concatenated) without holding the images in
memory. It reads each shard's ``/label`` array and checks the format up front (cheap), then
makes one streaming pass over the images, block by block, which

- rejects NaN/Inf pixels, naming the file and the image (as ``read_shard`` does);
- computes the data fingerprint, bit for bit the SHA-256 of ``darklens.data.fingerprint``
  on the loaded data (the hash is fed the same bytes in the same order), so runs trained from
  shards before and after streaming, and ``darklens evaluate`` (which loads the data), agree;
- keeps each image's pixel mean and sum of squared deviations (16 bytes per image), from which
  ``fit_normaliser("standard", indices)`` combines the mean and standard deviation of any
  subset exactly in float64 (Chan et al.'s pairwise update; equal to numpy's two-pass result
  up to float64 rounding, about 1e-15 relative).

After that, ``images[i]`` reads the block (the shard's HDF5 chunk, about 1 MiB) holding image
``i`` and keeps it in an LRU cache of at most ``cache_mb`` MiB, so memory does not grow with the
number of images beyond the cache (plus 40 bytes of labels and statistics per image). Items
are ``(image (1, H, W) float32 tensor, label)``; ``ImageDataset(shard_dataset, indices,
normaliser)`` works on it as on a ``LensData``. HDF5 files are opened lazily in each process
(at most ``max_open`` at a time) and never pickled, so DataLoader workers (each with its own
cache) are safe. Metadata columns are checked for shape but not loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from darklens.data.dataset import Normaliser
from darklens.data.hdf5 import _as_str, _short
from darklens.data.lensdata import CLASSES, LensData
from darklens.errors import DataError

DEFAULT_CACHE_MB: float = 1024.0
_BLOCK_BYTES = 1 << 20  # block size for shards stored without chunks


class _Shard:
    """What is known about one shard without reading its images."""

    def __init__(self, path: Path, n: int, block: int, image_shape: tuple[int, ...],
                 class_names: tuple[str, ...], attrs: dict[str, Any]):
        self.path, self.n, self.block = path, n, block
        self.image_shape, self.class_names, self.attrs = image_shape, class_names, attrs


class LazyImages:
    """Array-like view of the images of a ``ShardDataset``: ``shape``, ``len``, indexing."""

    def __init__(self, owner: ShardDataset):
        self._owner = owner
        self.shape = (len(owner), *owner.image_shape)
        self.dtype = np.dtype(np.float32)
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: Any) -> np.ndarray:
        """An int gives one image (1, H, W); a slice or index array reads those images."""
        if isinstance(index, (int, np.integer)):
            return self._owner.image(int(index))
        idx = np.arange(len(self))[index]
        out = np.empty((len(idx), *self.shape[1:]), np.float32)
        for k, i in enumerate(idx):
            out[k] = self._owner.image(int(i))
        return out


class ShardDataset(Dataset):
    """Lazy, checked view of HDF5 shards (see the module docstring)."""

    def __init__(self, paths: Sequence[str | os.PathLike], cache_mb: float = DEFAULT_CACHE_MB,
                 max_open: int = 16, check: bool = True):
        if not paths:
            raise DataError("no HDF5 shards given")
        self.paths = [Path(p) for p in paths]
        self.cache_bytes = int(max(0.0, cache_mb) * (1 << 20))
        self.max_open = max(1, int(max_open))
        self._shards = [_inspect(p) for p in self.paths]
        ref = self._shards[0]
        for s in self._shards[1:]:
            if s.image_shape != ref.image_shape:
                raise DataError(f"{s.path}: image size {s.image_shape[1:]} differs from "
                                f"{ref.image_shape[1:]} of {ref.path}")
            if s.class_names != ref.class_names:
                raise DataError(f"{s.path}: class names {s.class_names} differ from "
                                f"{ref.class_names} of {ref.path}")
        self.image_shape: tuple[int, ...] = ref.image_shape
        self.class_names: tuple[str, ...] = ref.class_names
        self.labels = np.concatenate([_read_labels(s) for s in self._shards]).astype(np.int64)
        self.offsets = np.concatenate([[0], np.cumsum([s.n for s in self._shards])])
        self.metadata: dict[str, np.ndarray] = {}
        self.attrs = {**ref.attrs, "sources": [str(p) for p in self.paths]}
        self.images = LazyImages(self)
        self._pid = os.getpid()
        self._files: OrderedDict[int, h5py.File] = OrderedDict()
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._cached = 0
        self.fingerprint: str | None = None
        self._means = self._m2s = None
        if check:
            self._scan()

    def metadata_column(self, name: str) -> np.ndarray | None:
        """One per-image metadata column over every shard (e.g. ``index``, which physical
        pseudo-anomalies re-render from), or None where a shard lacks it. Reads that column
        only, never the images."""
        parts = []
        for shard in self._shards:
            try:
                with h5py.File(shard.path, "r") as f:
                    group = f.get("metadata")
                    if group is None or name not in group:
                        return None
                    parts.append(np.asarray(group[name][...]))
            except (OSError, KeyError, ValueError) as err:
                raise DataError(f"{shard.path}: unreadable metadata column '{name}' "
                                f"({_short(err)})") from None
        return np.concatenate(parts)

    @classmethod
    def from_path(cls, path: str | os.PathLike, cache_mb: float = DEFAULT_CACHE_MB,
                  check: bool = True) -> ShardDataset:
        """The shards at ``path`` (one file, or every visible shard below a folder).
        ``check=False`` skips the pass over every image (no fingerprint or normaliser
        statistics; images read later are still checked for NaN/Inf), for callers that read
        only a few images."""
        from darklens.data.formats import find_shards

        path = Path(path)
        shards = [path] if path.is_file() else find_shards(path)
        if not shards:
            raise DataError(f"{path}: no HDF5 shards (.h5/.hdf5)")
        return cls(shards, cache_mb, check=check)

    # --- the torch Dataset -------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(self.image(i)), int(self.labels[i])

    def image(self, i: int) -> np.ndarray:
        """Image ``i`` (1, H, W) float32, a fresh array (the cache keeps its own block)."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"image {i} out of range for {n} images")
        i %= n
        s = int(np.searchsorted(self.offsets, i, side="right")) - 1
        j = i - int(self.offsets[s])
        b, k = divmod(j, self._shards[s].block)
        return self._block(s, b)[k].copy()

    # --- whole-data quantities from the streaming pass ---------------------------------------
    def fit_normaliser(self, mode: str, indices: np.ndarray | None = None) -> Normaliser:
        """``Normaliser.fit(mode, images[indices])`` without loading the images."""
        if mode != "standard":
            return Normaliser.fit(mode, None)
        if self._means is None:
            self._scan()
        idx = np.arange(len(self)) if indices is None else np.asarray(indices, dtype=np.int64)
        if idx.size == 0:
            raise ValueError("'standard' normalisation needs training images to fit on")
        pixels = int(np.prod(self.image_shape))
        means, m2s = self._means[idx], self._m2s[idx]
        mean = float(means.mean())
        m2 = float(m2s.sum() + pixels * np.square(means - mean).sum())
        std = float(np.sqrt(m2 / (pixels * idx.size)))
        return Normaliser(mode, mean, std if std > 0 else 1.0)

    def to_lensdata(self) -> LensData:
        """Everything in memory (as ``load_dataset`` gives it, without metadata)."""
        return LensData(self.images[:], self.labels.copy(), self.class_names, {}, dict(self.attrs))

    def _scan(self) -> None:
        """One pass over every image: finiteness, fingerprint, per-image mean and M2."""
        h = hashlib.sha256()
        means = np.empty(len(self), np.float64)
        m2s = np.empty(len(self), np.float64)
        for s, shard in enumerate(self._shards):
            for b in range(-(-shard.n // shard.block) if shard.n else 0):
                block = self._read_block(s, b)
                h.update(block.tobytes())
                x = block.reshape(len(block), -1).astype(np.float64)
                mu = x.mean(axis=1)
                lo = int(self.offsets[s]) + b * shard.block
                means[lo:lo + len(block)] = mu
                m2s[lo:lo + len(block)] = np.square(x - mu[:, None]).sum(axis=1)
        h.update(np.ascontiguousarray(self.labels, dtype=np.int64).tobytes())
        self.fingerprint = h.hexdigest()
        self._means, self._m2s = means, m2s
        self._close()

    # --- reading, caching, per-process file handles ------------------------------------------
    def _block(self, s: int, b: int) -> np.ndarray:
        if os.getpid() != self._pid:  # a forked DataLoader worker: nothing inherited is used
            self._files, self._cache, self._cached = OrderedDict(), OrderedDict(), 0
            self._pid = os.getpid()
        key = (s, b)
        block = self._cache.get(key)
        if block is not None:
            self._cache.move_to_end(key)
            return block
        block = self._read_block(s, b)
        if block.nbytes <= self.cache_bytes:
            while self._cache and self._cached + block.nbytes > self.cache_bytes:
                _, old = self._cache.popitem(last=False)
                self._cached -= old.nbytes
            block.setflags(write=False)
            self._cache[key] = block
            self._cached += block.nbytes
        return block

    def _read_block(self, s: int, b: int) -> np.ndarray:
        shard = self._shards[s]
        lo, hi = b * shard.block, min(shard.n, (b + 1) * shard.block)
        try:
            block = self._file(s)["images"][lo:hi]
        except (OSError, KeyError, ValueError, TypeError) as err:
            raise DataError(f"{shard.path}: corrupt HDF5 shard, unreadable data or failed "
                            f"checksum ({_short(err)})") from None
        block = np.ascontiguousarray(block, dtype=np.float32)
        bad = ~np.isfinite(block).reshape(len(block), int(np.prod(block.shape[1:]))).all(axis=1)
        if bad.any():
            raise DataError(f"{shard.path}: image {lo + int(np.argmax(bad))} has NaN or Inf "
                            "pixel values")
        return block

    def _file(self, s: int) -> h5py.File:
        f = self._files.get(s)
        if f is not None:
            self._files.move_to_end(s)
            return f
        while len(self._files) >= self.max_open:
            _, old = self._files.popitem(last=False)
            old.close()
        try:  # no HDF5 chunk cache: whole chunks are read and cached here
            f = h5py.File(self._shards[s].path, "r", rdcc_nbytes=0)
        except OSError as err:
            raise DataError(f"{self._shards[s].path}: not a readable HDF5 file (corrupt, "
                            f"truncated or not HDF5: {_short(err)})") from None
        self._files[s] = f
        return f

    def _close(self) -> None:
        if getattr(self, "_pid", None) == os.getpid():
            for f in self._files.values():
                f.close()
        self._files = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_files=OrderedDict(), _cache=OrderedDict(), _cached=0, _pid=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pid = os.getpid()

    def __del__(self) -> None:
        try:
            self._close()
        except Exception:  # interpreter shutdown: h5py may be gone already
            pass


def _inspect(path: Path) -> _Shard:
    """Check a shard's layout and attributes without reading its images."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise DataError(f"{path}: not a readable HDF5 file (corrupt, truncated or not HDF5: "
                        f"{_short(err)})") from None
    try:
        with f:
            for name in ("images", "label"):
                if name not in f or not isinstance(f[name], h5py.Dataset):
                    raise DataError(f"{path}: not a darklens shard (no '{name}' dataset)")
            images, labels = f["images"], f["label"]
            if images.ndim != 4 or images.shape[1] != 1 or images.dtype.kind != "f":
                raise DataError(f"{path}: 'images' must be float (N, 1, H, W), got "
                                f"{images.dtype} {images.shape}")
            n = int(images.shape[0])
            if labels.shape != (n,) or labels.dtype.kind not in "iu":
                raise DataError(f"{path}: 'label' must be integer ({n},), got "
                                f"{labels.dtype} {labels.shape}")
            try:
                names = json.loads(_as_str(f.attrs.get("class_names",
                                                       json.dumps(list(CLASSES)))))
                attrs = json.loads(_as_str(f.attrs.get("attrs_json", "{}")))
            except (json.JSONDecodeError, TypeError):
                names, attrs = None, None
            if not isinstance(attrs, dict) or not isinstance(names, list) \
                    or not all(isinstance(c, str) for c in names):
                raise DataError(f"{path}: corrupt shard attributes (class_names / attrs_json)")
            group = f.get("metadata")
            for name in group if group is not None else ():
                shape = group[name].shape
                if len(shape) not in (1, 2) or shape[0] != n:
                    raise DataError(f"{path}: metadata column '{name}' has shape {shape}, "
                                    f"expected ({n}, ...)")
            per_image = int(np.prod(images.shape[1:])) * 4
            block = images.chunks[0] if images.chunks else max(1, _BLOCK_BYTES // per_image)
            return _Shard(path, n, max(1, int(block)), tuple(int(d) for d in images.shape[1:]),
                          tuple(names), attrs)
    except DataError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as err:
        raise DataError(f"{path}: corrupt HDF5 shard ({_short(err)})") from None


def _read_labels(shard: _Shard) -> np.ndarray:
    try:
        with h5py.File(shard.path, "r") as f:
            labels = f["label"][...]
    except (OSError, KeyError, ValueError) as err:
        raise DataError(f"{shard.path}: corrupt HDF5 shard, unreadable labels or failed "
                        f"checksum ({_short(err)})") from None
    if shard.n and (labels.min() < 0 or labels.max() >= len(shard.class_names)):
        raise DataError(f"{shard.path}: labels outside 0..{len(shard.class_names) - 1} "
                        f"({shard.class_names})")
    return labels.astype(np.int64, copy=False)


def is_shard_path(path: str | os.PathLike) -> bool:
    """Whether ``load_dataset(path)`` would read HDF5 shards there."""
    from darklens.data.formats import SHARD_SUFFIXES, find_shards

    path = Path(path)
    if path.is_file():
        return path.suffix.lower() in SHARD_SUFFIXES
    return path.is_dir() and bool(find_shards(path))
