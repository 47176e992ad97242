"""Where DeepLense files lie and their ``labels.csv``: class folder names, image listing, CSV I/O.

The layout itself (one ``.npy`` per image in a folder per class, plus an optional ``labels.csv``)
is described in ``darklens.data.deeplense``, which reads, writes and converts whole trees with
these helpers and re-exports them. Split out so that ``deeplense`` stays under 400 lines and the
folder/CSV rules live in one place shared by the reader, the writer and the converter.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from darklens.errors import DataError
from darklens.io import write_text_atomic

LABELS_CSV = "labels.csv"

#: Folder name (lower case) -> canonical class name.
CLASS_ALIASES: dict[str, str] = {
    "no_sub": "no_sub",
    "nosub": "no_sub",
    "no_substructure": "no_sub",
    "no-sub": "no_sub",
    "no": "no_sub",
    "cdm": "cdm",
    "sub": "cdm",
    "subhalo": "cdm",
    "subhalos": "cdm",
    "sphere": "cdm",
    "spherical": "cdm",
    "vortex": "vortex",
    "vort": "vortex",
    "vortices": "vortex",
    "axion": "vortex",
}


def canonical_class(folder_name: str) -> str | None:
    """The canonical class for a folder name (any accepted spelling), or None if unknown."""
    return CLASS_ALIASES.get(folder_name.lower())


def class_folders(root: str | os.PathLike) -> dict[str, Path]:
    """Map canonical class name -> its folder under ``root``.

    Unknown visible sub-folders are skipped with a warning; two folders for the same class (e.g.
    ``axion`` and ``vortex``) are a ``DataError``.
    """
    root = Path(root)
    found: dict[str, Path] = {}
    unknown = []
    for entry in sorted(root.iterdir()):
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        name = canonical_class(entry.name)
        if name is None:
            unknown.append(entry.name)
        elif name in found:
            raise DataError(
                f"{root}: both '{found[name].name}' and '{entry.name}' are folders of class "
                f"'{name}'; keep one"
            )
        else:
            found[name] = entry
    if unknown and found:
        warnings.warn(
            f"{root}: skipped folder(s) not named after a class: {', '.join(unknown)} "
            f"(known names: {', '.join(sorted(CLASS_ALIASES))})",
            stacklevel=2,
        )
    return found


def npy_files(folder: Path) -> list[Path]:
    """The ``.npy`` files of a class folder, sorted by name; other visible entries -> warning."""
    files, skipped = [], []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file() and entry.suffix.lower() == ".npy":
            files.append(entry)
        else:
            skipped.append(entry.name + ("/" if entry.is_dir() else ""))
    if skipped:
        shown = ", ".join(skipped[:5]) + (
            f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        )
        warnings.warn(f"{folder}: skipped {len(skipped)} non-.npy entries: {shown}", stacklevel=2)
    return files


# ----------------------------------------------------------------------------- labels.csv


def read_labels_csv(path: Path) -> tuple[list[str], dict[str, dict[str, str]]]:
    """Read ``labels.csv``: (column names, file -> row). ``DataError`` on malformed content."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read ({err})") from None
    reader = csv.DictReader(io.StringIO(text))
    columns = list(reader.fieldnames or [])
    if "file" not in columns:
        raise DataError(f"{path}: no 'file' column (found: {', '.join(columns) or 'nothing'})")
    rows: dict[str, dict[str, str]] = {}
    try:
        for line, row in enumerate(reader, start=2):
            if None in row or any(v is None for v in row.values()):
                raise DataError(f"{path}: line {line} has a different number of cells")
            key = row["file"].strip()
            if key in rows:
                raise DataError(f"{path}: file '{key}' is listed twice")
            rows[key] = row
    except csv.Error as err:
        raise DataError(f"{path}: malformed CSV ({err})") from None
    return columns, rows


def merge_labels_csv(root: Path, columns: Sequence[str], rows: dict[str, dict[str, str]]) -> Path:
    """Merge ``rows`` into ``<root>/labels.csv`` (new rows replace same-file rows), atomically.

    Columns: ``file``, ``class``, then the union of metadata columns in order of first appearance;
    rows sorted by file; missing cells are empty.
    """
    path = root / LABELS_CSV
    all_columns = ["file", "class"]
    merged: dict[str, dict[str, str]] = {}
    if path.exists():
        old_columns, old_rows = read_labels_csv(path)
        all_columns += [c for c in old_columns if c not in all_columns]
        merged.update(old_rows)
    all_columns += [c for c in columns if c not in all_columns]
    merged.update(rows)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=all_columns, restval="", lineterminator="\n")
    writer.writeheader()
    for key in sorted(merged):
        writer.writerow({c: merged[key].get(c, "") for c in all_columns})
    write_text_atomic(path, out.getvalue())
    return path


def csv_cell(value: float | np.generic) -> str:
    """A metadata value as CSV text that reads back exactly (shortest round-trip repr)."""
    if isinstance(value, bool | np.bool_):
        return str(int(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    value = float(value)
    return "" if math.isnan(value) else repr(value)


def columns_from_rows(
    path: Path, columns: Sequence[str], rows: list[dict[str, str]]
) -> dict[str, np.ndarray]:
    """Numeric metadata arrays from CSV rows (int if every cell is an integer, else float)."""
    metadata: dict[str, np.ndarray] = {}
    for column in columns:
        if column in ("file", "class"):
            continue
        cells = [row.get(column, "").strip() for row in rows]
        if all(re.fullmatch(r"[+-]?\d+", c) for c in cells) and cells:
            metadata[column] = np.array([int(c) for c in cells], dtype=np.int64)
            continue
        try:
            metadata[column] = np.array([float(c) if c else np.nan for c in cells])
        except ValueError:
            warnings.warn(f"{path}: skipped non-numeric column '{column}'", stacklevel=3)
    return metadata
