"""The DeepLense on-disk layout, both ways: one ``.npy`` image per file in a folder per class.

Layout::

    <root>/no_sub/<name>.npy     plain float arrays (H, W), never pickled
    <root>/cdm/<name>.npy
    <root>/vortex/<name>.npy
    <root>/labels.csv            optional: file, class, then scalar metadata columns

``labels.csv`` has one row per image: ``file`` is the path relative to the root with forward
slashes (``cdm/cdm_000012.npy``), ``class`` the canonical class name, then numeric scalar
metadata columns (regression targets such as ``log10_axion_mass``; 2-D metadata such as
per-subhalo masses is not written to CSV). Rows are sorted by ``file``; an empty cell is NaN.

Class folder names: darklens writes the canonical names ``no_sub``, ``cdm``, ``vortex``. The reader
also accepts the spellings of the public DeepLense data sets (case-insensitive), see
``CLASS_ALIASES``: ``no_sub`` <- nosub, no_substructure, no-sub, no; ``cdm`` <- sub, subhalo,
subhalos, sphere, spherical; ``vortex`` <- vort, vortices, axion.

Hidden entries (names starting with ``.``: temp files of unfinished atomic writes, ``.DS_Store``)
are ignored silently; other non-``.npy`` entries inside a class folder are skipped with a warning.

Class-folder discovery and ``labels.csv`` reading/writing live in
``darklens.data.deeplense_layout`` (shared by the reader, the writer and the converter here); their
names are re-exported from this module.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from darklens.data.deeplense_layout import (
    CLASS_ALIASES,
    LABELS_CSV,
    canonical_class,
    class_folders,
    columns_from_rows,
    csv_cell,
    merge_labels_csv,
    npy_files,
    read_labels_csv,
)
from darklens.data.lensdata import CLASSES, LensData
from darklens.data.npy_safe import load_npy, read_npy_header, save_npy, validate_image
from darklens.errors import DataError

__all__ = [
    "CLASS_ALIASES",
    "LABELS_CSV",
    "canonical_class",
    "class_folders",
    "convert_deeplense",
    "merge_labels_csv",
    "npy_files",
    "read_deeplense_folder",
    "read_labels_csv",
    "write_deeplense_folder",
]


# ----------------------------------------------------------------------------- read / write


def read_deeplense_folder(
    root: str | os.PathLike, classes: Iterable[str] | None = None
) -> LensData:
    """Read a DeepLense class-folder tree into ``LensData`` (labels index ``CLASSES``).

    ``classes``: canonical class names to read (default: every class folder present). A
    requested class whose folder is missing or holds no ``.npy`` file is a ``DataError``, as are
    images of different sizes (naming the offending file) and a ``labels.csv`` whose rows do not
    match the image files one to one (naming the files).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory")
    folders = class_folders(root)
    wanted = _wanted_classes(root, folders, classes)
    images: list[np.ndarray] = []
    labels: list[int] = []
    keys: list[str] = []
    paths: list[str] = []
    first: tuple[Path, tuple[int, ...]] | None = None
    for name in wanted:
        files = npy_files(folders[name])
        if not files:
            raise DataError(f"{folders[name]}: class folder '{name}' holds no .npy images")
        for file in files:
            image = load_npy(file)
            if first is None:
                first = (file, image.shape)
            elif image.shape != first[1]:
                raise DataError(
                    f"{file}: image size {image.shape} differs from {first[1]} of {first[0]}; "
                    "all images in a data set must have the same size"
                )
            images.append(image)
            labels.append(CLASSES.index(name))
            keys.append(f"{folders[name].name}/{file.name}")
            paths.append(str(file))
    metadata = _metadata_from_csv(root, keys, wanted)
    return LensData(
        images=np.stack(images)[:, None],
        labels=np.array(labels, dtype=np.int64),
        class_names=CLASSES,
        metadata=metadata,
        attrs={"source": str(root), "format": "deeplense", "files": paths},
    )


def _wanted_classes(root: Path, folders: dict[str, Path], classes: Iterable[str] | None) -> list:
    if classes is None:
        if not folders:
            raise DataError(
                f"{root}: no class folders (expected some of {', '.join(CLASSES)}, "
                "or DeepLense spellings such as no_substructure, sub, axion)"
            )
        return [c for c in CLASSES if c in folders]
    wanted = []
    for c in classes:
        if c not in CLASSES:
            raise DataError(f"unknown class '{c}' (known: {', '.join(CLASSES)})")
        if c not in folders:
            raise DataError(f"{root / c}: class folder for '{c}' is missing")
        wanted.append(c)
    return wanted


def _metadata_from_csv(root: Path, keys: list[str], wanted: list[str]) -> dict[str, np.ndarray]:
    path = root / LABELS_CSV
    if not path.exists():
        return {}
    columns, rows = read_labels_csv(path)
    relevant = {}
    for key, row in rows.items():
        cls = canonical_class(key.split("/", 1)[0]) if "/" in key else None
        if cls is None:
            relevant[key] = row  # belongs to no class folder: reported as an extra row below
        elif cls in wanted:
            relevant[key] = row
            given = row.get("class", "").strip()
            if given and canonical_class(given) != cls:
                raise DataError(f"{path}: '{key}' has class '{given}' but lies in a {cls} folder")
    missing = [k for k in keys if k not in relevant]
    extra = sorted(set(relevant) - set(keys))
    if missing:
        raise DataError(f"{path}: {len(missing)} image file(s) have no row: {_listing(missing)}")
    if extra:
        raise DataError(
            f"{path}: {len(extra)} row(s) name files that do not exist: {_listing(extra)}"
        )
    return columns_from_rows(path, columns, [relevant[k] for k in keys])


def _listing(items: Sequence[str], limit: int = 5) -> str:
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def write_deeplense_folder(
    root: str | os.PathLike, data: LensData, names: Sequence[str] | None = None
) -> list[Path]:
    """Write ``data`` as ``<root>/<class>/<name>.npy`` plus ``labels.csv``; return the files.

    Each file is written atomically; ``labels.csv`` is merged with an existing one (rows for the
    same file are replaced) so that calls for different shards or classes accumulate. ``names``:
    one file stem per image. Default: ``<class>_<index:06d>`` with the ``index`` metadata column
    when there is one (the simulator's global image index), else numbers continuing after the
    highest already in that class folder (pass names explicitly when writers run in parallel).
    Scalar metadata columns go to ``labels.csv``; 2-D columns are not written.
    """
    root = Path(root)
    n = len(data)
    class_of = [data.class_names[int(i)] for i in data.labels]
    for c in set(class_of):
        if c not in CLASSES:
            raise ValueError(f"class '{c}' has no DeepLense folder (known: {CLASSES})")
    if names is None:
        names = _default_names(root, data, class_of)
    if len(names) != n or len(set(zip(class_of, names, strict=True))) != n:
        raise ValueError("names must give one distinct name per image")
    scalar = {k: np.asarray(v) for k, v in data.metadata.items() if np.asarray(v).ndim == 1}
    written, rows = [], {}
    for i in range(n):
        key = f"{class_of[i]}/{names[i]}.npy"
        written.append(save_npy(root / key, data.images[i, 0]))
        row = {"file": key, "class": class_of[i]}
        row.update({k: csv_cell(v[i]) for k, v in scalar.items()})
        rows[key] = row
    merge_labels_csv(root, list(scalar), rows)
    return written


def _default_names(root: Path, data: LensData, class_of: list[str]) -> list[str]:
    if "index" in data.metadata and np.asarray(data.metadata["index"]).ndim == 1:
        index = np.asarray(data.metadata["index"])
        return [f"{c}_{int(i):06d}" for c, i in zip(class_of, index, strict=True)]
    next_number: dict[str, int] = {}
    names = []
    for c in class_of:
        if c not in next_number:
            numbers = [-1]
            if (root / c).is_dir():
                for p in (root / c).glob(f"{c}_*.npy"):
                    m = re.fullmatch(rf"{re.escape(c)}_(\d+)\.npy", p.name)
                    if m:
                        numbers.append(int(m.group(1)))
            next_number[c] = max(numbers) + 1
        names.append(f"{c}_{next_number[c]:06d}")
        next_number[c] += 1
    return names


# ----------------------------------------------------------------------------- conversion


def convert_deeplense(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    trust_pickle: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict[str, int]:
    """Convert a public DeepLense tree into plain ``.npy`` class folders plus ``labels.csv``.

    Source folders may use any spelling in ``CLASS_ALIASES``. Files holding a pickled object
    array ``[image, mass]`` (the public axion files) are read only with ``trust_pickle=True``,
    which runs pickle on them (warned about); without it they are a ``DataError``. A mass (in eV)
    becomes the ``log10_axion_mass`` column. Returns the number of images written per class.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise DataError(f"{src}: not a directory")
    if src.resolve() == dst.resolve():
        raise DataError(f"{dst}: the destination must differ from the source")
    folders = class_folders(src)
    if not folders:
        raise DataError(f"{src}: no class folders (expected e.g. no_sub, cdm, axion)")
    say = log or (lambda _msg: None)
    plan = {name: npy_files(folders[name]) for name in CLASSES if name in folders}
    pickled: set[Path] = set()
    for name, files in plan.items():  # check every header before writing anything
        if not files:
            raise DataError(f"{folders[name]}: class folder '{name}' holds no .npy images")
        pickled.update(f for f in files if read_npy_header(f)[2].hasobject)
    if pickled and not trust_pickle:
        first = min(pickled)
        raise DataError(
            f"{first}: holds a pickled object array ({len(pickled)} such file(s) under {src}); "
            "reading it runs pickle, which can execute code. If you trust the files, rerun "
            "with --trust-pickle"
        )
    if pickled:
        message = (
            f"--trust-pickle: running pickle on {len(pickled)} object-array file(s) under {src} "
            "(only do this for files you trust)"
        )
        warnings.warn(message, stacklevel=2)
        say(message)
    counts: dict[str, int] = {}
    for name, files in plan.items():
        rows = {}
        for file in files:
            mass = None
            if file in pickled:
                image, mass = _load_trusted_pickle(file)
            else:
                image = load_npy(file)
            key = f"{name}/{file.stem}.npy"
            save_npy(dst / key, image)
            row = {"file": key, "class": name}
            if mass is not None:
                row["log10_axion_mass"] = repr(math.log10(mass))
            rows[key] = row
        columns = ["log10_axion_mass"] if any(len(r) > 2 for r in rows.values()) else []
        merge_labels_csv(dst, columns, rows)
        counts[name] = len(files)
        say(f"{name}: {len(files)} images from {folders[name]} -> {dst / name}")
    return counts


def _load_trusted_pickle(file: Path) -> tuple[np.ndarray, float | None]:
    """Unpickle a DeepLense object array (trusted by the user) into (image, mass in eV or None)."""
    try:
        obj = np.load(file, allow_pickle=True)
    except Exception as err:  # a corrupt pickle can raise almost anything
        raise DataError(f"{file}: cannot unpickle ({type(err).__name__}: {err})") from None
    items = list(np.asarray(obj, dtype=object).ravel()) if np.ndim(obj) else [obj]
    arrays = [x for x in items if np.ndim(x) >= 2]
    scalars = [x for x in items if np.ndim(x) < 2]
    if len(arrays) != 1 or len(scalars) > 1:
        raise DataError(f"{file}: expected [image, mass], found {len(items)} item(s)")
    image = validate_image(np.asarray(arrays[0]), file)
    if not scalars:
        return image, None
    try:
        mass = float(np.asarray(scalars[0], dtype=np.float64).reshape(()))
    except (TypeError, ValueError):
        raise DataError(f"{file}: the second item is not a number (axion mass)") from None
    if not (math.isfinite(mass) and mass > 0):
        raise DataError(f"{file}: axion mass {mass!r} is not a positive number (in eV)")
    return image, mass
