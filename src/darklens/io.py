"""Atomic file writes: a reader never sees a half-written file, an interrupted write leaves none."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npy_format


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON (indented, keys in insertion order) atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


class NpyRows:
    """Rows of a ``.npy`` array appended a block at a time (see ``npy_rows``)."""

    def __init__(self, raw: Any, row_shape: tuple[int, ...], dtype: np.dtype):
        self._raw, self.row_shape, self.dtype, self.n = raw, row_shape, dtype, 0

    def append(self, block: np.ndarray) -> None:
        """Append ``block`` (n, *row_shape), converted to the file's dtype."""
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.shape[1:] != self.row_shape:
            raise ValueError(f"rows of shape {block.shape[1:]}, expected {self.row_shape}")
        self._raw.write(block.tobytes())
        self.n += len(block)


@contextlib.contextmanager
def npy_rows(path: str | os.PathLike, row_shape: tuple[int, ...],
             dtype: Any = np.float32) -> Iterator[NpyRows]:
    """Write a ``.npy`` array (n, *row_shape) whose rows come in blocks and whose length n
    is known only at the end, without holding it in memory: the rows go to an unnamed temp
    file beside ``path``; when the block succeeds, the header and the rows are written to
    ``path`` atomically (the same bytes as ``np.save`` of the whole array); when it fails,
    nothing is written."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    dt = np.dtype(dtype)
    with tempfile.TemporaryFile(dir=target.parent) as raw:
        rows = NpyRows(raw, tuple(row_shape), dt)
        yield rows
        raw.seek(0)
        header = {"descr": npy_format.dtype_to_descr(dt), "fortran_order": False,
                  "shape": (rows.n, *rows.row_shape)}
        with atomic_path(target) as tmp, open(tmp, "wb") as fh:
            npy_format.write_array_header_1_0(fh, header)
            shutil.copyfileobj(raw, fh)


def read_json_object(path: str | os.PathLike, what: str, missing_hint: str = "") -> dict[str, Any]:
    """The JSON object in ``path``; a ``CheckpointError`` naming the file otherwise.

    ``what`` says what the object should hold, ``missing_hint`` what a missing file suggests.
    """
    from darklens.errors import CheckpointError

    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError as err:
        hint = f" ({missing_hint})" if missing_hint else ""
        raise CheckpointError(f"{path}: missing{hint}") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a JSON object with the {what}")
    return obj
