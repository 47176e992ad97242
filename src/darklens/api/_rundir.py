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
