"""Run directories of the API: a private temporary one per ``fit``, and an atomic copy out."""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from pathlib import Path

from darklens.errors import DarklensError


class TempRunDir:
    """A temporary directory removed when this object is garbage-collected (or at exit)."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="darklens-run-"))
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(self.path), True)


def copy_run(src: Path, dst: Path) -> Path:
    """Copy the run directory ``src`` to ``dst``: into a hidden sibling first, then renamed, so
    ``dst`` never holds half a run. ``dst`` must not exist or be an empty directory."""
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise DarklensError(f"{dst} already exists and is not an empty directory")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    try:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dst


class RunDirHolder:
    """The run directory of a trainable API object (``Detector``, ``Regressor``): the one
    given to ``fit`` or ``load``, or a private temporary one kept while the object lives.

    ``_what`` names the object in errors (``detector dcae``, ``regressor``)."""

    _run_dir: Path | None = None
    _temp: TempRunDir | None = None

    def _what(self) -> str:
        raise NotImplementedError

    def _use_run_dir(self, out: str | os.PathLike[str] | None) -> Path:
        """``out``, or (None) a new private temporary directory, as the run's directory."""
        if out is None:
            self._temp = TempRunDir()
            return self._temp.path
        return Path(out)

    def _state(self) -> str:
        """``untrained`` or ``trained, run in DIR``, for ``repr``."""
        return "untrained" if self._run_dir is None else f"trained, run in {self._run_dir}"

    def _trained_run_dir(self) -> Path:
        if self._run_dir is None:
            raise DarklensError(f"{self._what()} is not trained: call fit() first")
        return self._run_dir

    def _save_run(self, path: str | os.PathLike[str]) -> Path:
        """The trained run copied to a new directory ``path`` (see ``copy_run``)."""
        return copy_run(self._trained_run_dir(), Path(path))
