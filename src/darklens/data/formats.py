"""The data formats darklens reads and writes, and ``load_dataset`` that tells them apart.

Formats (see the modules for details):
- HDF5 shards (``darklens.data.hdf5``): ``write_shard``, ``read_shard``.
- DeepLense class folders (``darklens.data.deeplense``): ``write_deeplense_folder``,
  ``read_deeplense_folder``, ``convert_deeplense``.
- Single ``.npy`` images (``darklens.data.npy_safe``): ``load_npy``, ``save_npy``.

``load_dataset(path)`` accepts any of them:
- a ``.h5``/``.hdf5`` file: one shard;
- a directory holding ``.h5``/``.hdf5`` shards anywhere below it (``darklens simulate`` writes
  ``<out>/<class>/shard-NNNNN.h5``): all of them, in sorted path order, concatenated (hidden files
  and folders, whose names start with ``.``, are skipped: they are temp files of unfinished
  writes);
- otherwise a directory with class folders (``no_sub``, ``cdm``, ``vortex`` or DeepLense
  spellings) of ``.npy`` files: a DeepLense tree;
- otherwise a directory of ``.npy`` files, or a single ``.npy`` file: unlabelled images, whose
  label is ``UNLABELLED`` (-1) (for scoring a user's own images).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from darklens.data.deeplense import (
    class_folders,
    convert_deeplense,
    npy_files,
    read_deeplense_folder,
    write_deeplense_folder,
)
from darklens.data.hdf5 import read_shard, write_shard
from darklens.data.lensdata import CLASSES, LensData
from darklens.data.npy_safe import load_npy, save_npy
from darklens.errors import DataError

__all__ = [
    "UNLABELLED",
    "SHARD_SUFFIXES",
    "load_dataset",
    "image_names",
    "find_shards",
    "concatenate",
    "read_shard",
    "write_shard",
    "read_deeplense_folder",
    "write_deeplense_folder",
    "convert_deeplense",
    "load_npy",
    "save_npy",
]

#: Label of an image whose class is unknown (a bare ``.npy`` file or folder of them).
UNLABELLED: int = -1
SHARD_SUFFIXES: tuple[str, ...] = (".h5", ".hdf5")


def load_dataset(path: str | os.PathLike, classes: Iterable[str] | None = None) -> LensData:
    """Load whatever darklens data lies at ``path`` (see the module docstring).

    ``classes``: keep only these classes (each must be present); ``DataError`` when the path does
    not exist, holds nothing usable, or any file in it is bad.
    """
    path = Path(path)
    classes = None if classes is None else list(classes)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if path.is_file():
        if path.suffix.lower() in SHARD_SUFFIXES:
            data = read_shard(path)
        elif path.suffix.lower() == ".npy":
            data = _unlabelled([path])
        else:
            raise DataError(
                f"{path}: unknown file type (expected an HDF5 shard .h5/.hdf5 or a .npy image)"
            )
        return _keep_classes(data, classes, path)
    shards = find_shards(path)
    if shards:
        return _keep_classes(concatenate([read_shard(p) for p in shards], shards), classes, path)
    if class_folders(path):
        return read_deeplense_folder(path, classes)
    images = [
        p
        for p in sorted(path.iterdir())
        if p.suffix.lower() == ".npy" and p.is_file() and not p.name.startswith(".")
    ]
    if images:
        return _keep_classes(_unlabelled(npy_files(path)), classes, path)
    raise DataError(
        f"{path}: nothing to load: no HDF5 shards (.h5), no class folders "
        f"({', '.join(CLASSES)}) and no .npy images"
    )


def image_names(data: LensData, path: str | os.PathLike) -> list[str]:
    """One name per image of ``data`` loaded from ``path``: its file where the format has one
    file per image (``.npy`` images, DeepLense folders), else ``PATH[i]``."""
    files = data.attrs.get("files")
    if files is not None and len(files) == len(data):
        return [str(f) for f in files]
    return [f"{path}[{i}]" for i in range(len(data))]


def find_shards(root: str | os.PathLike) -> list[Path]:
    """All visible HDF5 shards below ``root``, recursively, in sorted path order."""
    root = Path(root)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and Path(name).suffix.lower() in SHARD_SUFFIXES:
                found.append(Path(dirpath) / name)
    return sorted(found)


def concatenate(parts: list[LensData], sources: list[Path] | None = None) -> LensData:
    """Join data sets of the same image size and class names into one.

    Metadata columns present in every part are kept (2-D columns padded to the widest: NaN for
    floats, -1 for integers, False for booleans); columns missing from some part are dropped
    with a warning. ``attrs`` are the first part's, plus ``sources`` (the file names) if given.
    """
    if not parts:
        raise ValueError("nothing to concatenate")
    names = [str(s) for s in sources] if sources else [f"part {i}" for i in range(len(parts))]
    ref = parts[0]
    for part, name in zip(parts[1:], names[1:], strict=True):
        if part.images.shape[1:] != ref.images.shape[1:]:
            raise DataError(
                f"{name}: image size {part.images.shape[2:]} differs from "
                f"{ref.images.shape[2:]} of {names[0]}"
            )
        if tuple(part.class_names) != tuple(ref.class_names):
            raise DataError(
                f"{name}: class names {part.class_names} differ from {ref.class_names} "
                f"of {names[0]}"
            )
    common = [k for k in ref.metadata if all(k in p.metadata for p in parts)]
    dropped = sorted({k for p in parts for k in p.metadata} - set(common))
    if dropped:
        warnings.warn(
            f"metadata column(s) {', '.join(dropped)} missing from some shards; dropped",
            stacklevel=2,
        )
    metadata = {k: _stack_column([np.asarray(p.metadata[k]) for p in parts], k) for k in common}
    attrs = dict(ref.attrs)
    if sources:
        attrs["sources"] = names
    return LensData(
        images=np.concatenate([p.images for p in parts]),
        labels=np.concatenate([p.labels for p in parts]),
        class_names=tuple(ref.class_names),
        metadata=metadata,
        attrs=attrs,
    )


def _stack_column(columns: list[np.ndarray], name: str) -> np.ndarray:
    if len({c.ndim for c in columns}) != 1:
        raise DataError(f"metadata column '{name}' is 1-D in some shards and 2-D in others")
    if columns[0].ndim == 1:
        return np.concatenate(columns)
    width = max(c.shape[1] for c in columns)
    dtype = np.result_type(*columns)
    fill = {"f": np.nan, "b": False}.get(dtype.kind, -1)
    padded = []
    for c in columns:
        out = np.full((c.shape[0], width), fill, dtype=dtype)
        out[:, : c.shape[1]] = c
        padded.append(out)
    return np.concatenate(padded)


def _unlabelled(files: list[Path]) -> LensData:
    images = []
    for file in files:
        image = load_npy(file)
        if images and image.shape != images[0].shape:
            raise DataError(
                f"{file}: image size {image.shape} differs from {images[0].shape} of {files[0]}"
            )
        images.append(image)
    return LensData(
        images=np.stack(images)[:, None],
        labels=np.full(len(images), UNLABELLED, dtype=np.int64),
        class_names=CLASSES,
        metadata={},
        attrs={"files": [str(f) for f in files]},
    )


def _keep_classes(data: LensData, classes: list[str] | None, path: Path) -> LensData:
    if classes is None:
        return data
    keep = np.zeros(len(data), dtype=bool)
    for c in classes:
        if c not in data.class_names:
            raise DataError(f"unknown class '{c}' (known: {', '.join(data.class_names)})")
        mask = data.labels == data.class_names.index(c)
        if not mask.any():
            raise DataError(f"{path}: no images of class '{c}'")
        keep |= mask
    return data.select(keep)
