"""HDF5 shards: one file holds a block of images, their labels, metadata and provenance.

Layout of a shard (format ``darklens-shard``, version 1)::

    /images              float32 (N, 1, H, W), chunked by whole images (about 1 MiB a chunk)
    /label               int64 (N,), index into the class names
    /metadata/<column>   (N,) scalar columns or (N, K) padded columns (NaN-padded floats)
    attrs: format="darklens-shard", format_version=1, darklens_version, class_names (JSON list),
           attrs_json (the full ``LensData.attrs`` as JSON: preset, config, seed, ...),
           and, for inspection with h5dump, copies of the scalar attrs ``preset`` and ``seed``.

Every dataset carries Fletcher-32 checksums, so flipped bytes are reported, not read as data.
Shards are written atomically: a hidden temp file beside the target (``.<name>.XXXX.tmp``) is
renamed onto it only when complete, so a reader never sees a half-written shard.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np

from darklens import __version__
from darklens.data.lensdata import CLASSES, LensData
from darklens.errors import DataError
from darklens.io import _json_default, atomic_path

FORMAT_NAME = "darklens-shard"
FORMAT_VERSION = 1


def write_shard(
    path: str | os.PathLike,
    data: LensData | np.ndarray,
    metadata: dict[str, np.ndarray] | None = None,
    attrs: dict | None = None,
) -> Path:
    """Write a shard atomically; return its path.

    Call as ``write_shard(path, lens_data)``, or as ``write_shard(path, images, metadata, attrs)``
    with the labels in ``metadata["label"]`` and the class names in ``attrs["class_names"]``
    (default: ``CLASSES``). ``attrs`` must be JSON-serialisable (numpy scalars and arrays are
    converted); the package version is added as ``darklens_version``.
    """
    if not isinstance(data, LensData):
        metadata = dict(metadata or {})
        attrs = dict(attrs or {})
        if "label" not in metadata:
            raise ValueError("write_shard(path, images, metadata, attrs) needs metadata['label']")
        labels = metadata.pop("label")
        class_names = tuple(attrs.pop("class_names", CLASSES))
        data = LensData(np.asarray(data), np.asarray(labels), class_names, metadata, attrs)
    images = np.asarray(data.images)
    labels = np.asarray(data.labels)
    n = images.shape[0]
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"images must be (N, 1, H, W), got {images.shape}")
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be an integer array of shape ({n},), got {labels.shape}")
    for name, column in data.metadata.items():
        column = np.asarray(column)
        if column.ndim not in (1, 2) or column.shape[0] != n:
            raise ValueError(f"metadata column {name!r} must be (N,) or (N, K), got {column.shape}")
        if column.dtype.kind not in "biuf":
            raise ValueError(f"metadata column {name!r} must be numeric, got {column.dtype}")
    attrs = dict(data.attrs)
    attrs["darklens_version"] = __version__
    attrs_json = json.dumps(attrs, default=_json_default, sort_keys=True)

    h, w = images.shape[2:]
    per_chunk = int(max(1, min(n, (1 << 20) // max(1, h * w * 4))))  # about 1 MiB per chunk
    # Fletcher-32 checksums on every dataset: a corrupted (not just truncated) shard is detected.
    check = {"fletcher32": True} if n else {}
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset(
                "images",
                data=images.astype(np.float32, copy=False),
                chunks=(per_chunk, 1, h, w) if n else None,
                **check,
            )
            f.create_dataset("label", data=labels.astype(np.int64, copy=False), **check)
            group = f.create_group("metadata", track_order=True)
            for name, column in data.metadata.items():
                group.create_dataset(name, data=np.asarray(column), **check)
            f.attrs["format"] = FORMAT_NAME
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["darklens_version"] = __version__
            f.attrs["class_names"] = json.dumps(list(data.class_names))
            f.attrs["attrs_json"] = attrs_json
            for key in ("preset", "seed"):
                if isinstance(attrs.get(key), str | int | float):
                    f.attrs[key] = attrs[key]
    return Path(path)


def read_shard(path: str | os.PathLike) -> LensData:
    """Read a whole shard into memory, checking it; ``DataError`` names the file and the cause."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise DataError(
            f"{path}: not a readable HDF5 file (corrupt, truncated or not HDF5: {_short(err)})"
        ) from None
    try:
        with f:
            return _read_open_shard(f, path)
    except DataError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as err:
        raise DataError(
            f"{path}: corrupt HDF5 shard, unreadable data or failed checksum ({_short(err)})"
        ) from None


def _read_open_shard(f: h5py.File, path: Path) -> LensData:
    for name in ("images", "label"):
        if name not in f or not isinstance(f[name], h5py.Dataset):
            raise DataError(f"{path}: not a darklens shard (no '{name}' dataset)")
    images = f["images"][...]
    labels = f["label"][...]
    if images.ndim != 4 or images.shape[1] != 1 or images.dtype.kind != "f":
        raise DataError(
            f"{path}: 'images' must be float (N, 1, H, W), got {images.dtype} {images.shape}"
        )
    n = images.shape[0]
    if labels.shape != (n,) or labels.dtype.kind not in "iu":
        raise DataError(
            f"{path}: 'label' must be integer ({n},), got {labels.dtype} {labels.shape}"
        )
    try:
        names = json.loads(_as_str(f.attrs.get("class_names", json.dumps(list(CLASSES)))))
        attrs = json.loads(_as_str(f.attrs.get("attrs_json", "{}")))
    except (json.JSONDecodeError, TypeError):
        names, attrs = None, None
    if (
        not isinstance(attrs, dict)
        or not isinstance(names, list)
        or not all(isinstance(c, str) for c in names)
    ):
        raise DataError(f"{path}: corrupt shard attributes (class_names / attrs_json)")
    class_names = tuple(names)
    if n and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise DataError(f"{path}: labels outside 0..{len(class_names) - 1} ({class_names})")
    bad = ~np.isfinite(images).reshape(n, int(np.prod(images.shape[1:]))).all(axis=1)
    if bad.any():
        raise DataError(f"{path}: image {int(np.argmax(bad))} has NaN or Inf pixel values")
    metadata: dict[str, np.ndarray] = {}
    group = f.get("metadata")
    if group is not None:
        for name in group:
            column = group[name][...]
            if column.ndim not in (1, 2) or column.shape[0] != n:
                raise DataError(
                    f"{path}: metadata column '{name}' has shape {column.shape}, "
                    f"expected ({n}, ...)"
                )
            metadata[name] = column
    return LensData(
        images=images.astype(np.float32, copy=False),
        labels=labels.astype(np.int64, copy=False),
        class_names=class_names,
        metadata=metadata,
        attrs=attrs,
    )


def _as_str(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _short(err: Exception) -> str:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return text[:200]
