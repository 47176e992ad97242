"""Target selection for regression: which images of a data set carry the targets, and their values.

``regression_subset(data, targets)`` keeps the images of the classes the targets are defined on
(by default ``TARGET_CLASSES``: ``log10_axion_mass`` from vortex images, ``f_sub`` and
``n_subhalos`` from CDM images, anything else from every class). A target that is NaN for every
image of those classes is an error saying why (e.g. a preset that does not tie the vortex
length to an axion mass); NaN for some of them is an error naming the first such files, unless
``skip_nan`` (``--skip-nan``), which drops them saying how many. A column that ``labels.csv``
holds but is not numeric is named as such. Training (``darklens.train.regression``),
evaluation and population inference (``darklens.evaluate.run_population``) select the same
way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from darklens.data.deeplense import LABELS_CSV, read_labels_csv
from darklens.data.lensdata import LensData
from darklens.errors import DarklensError, DataError

#: Classes whose images carry a target, for the simulator's metadata (others: every class).
TARGET_CLASSES: dict[str, tuple[str, ...]] = {
    "log10_axion_mass": ("vortex",),
    "vortex_length": ("vortex",),
    "vortex_mass": ("vortex",),
    "f_sub": ("cdm",),
    "n_subhalos": ("cdm",),
    "subhalo_mass_total": ("cdm",),
}
AXION_PRESETS = ("model-i", "model-ii", "model-iii", "physical")


@dataclass
class Subset:
    """The images usable for a set of targets: indices into the loaded data and their values."""

    indices: np.ndarray  # (M,) into the LensData
    values: np.ndarray  # (M, T) float64
    classes: list[str]
    messages: list[str]


def default_classes(targets: Sequence[str], available: Sequence[str]) -> list[str]:
    """Classes every target is defined on (intersection of ``TARGET_CLASSES``)."""
    keep = list(available)
    for t in targets:
        if t in TARGET_CLASSES:
            keep = [c for c in keep if c in TARGET_CLASSES[t]]
    if not keep:
        raise DarklensError(
            f"targets {', '.join(targets)} are defined on no common class "
            f"({'; '.join(f'{t}: {TARGET_CLASSES[t]}' for t in targets if t in TARGET_CLASSES)})"
            "; train them separately or pass --classes")
    return keep


def _non_numeric(data: LensData, column: str) -> str | None:
    """The first non-numeric cell of ``column`` in a DeepLense folder's labels.csv, if any (the
    reader skips such columns, so the target would otherwise look absent)."""
    attrs = data.attrs if isinstance(data.attrs, dict) else {}
    if attrs.get("format") != "deeplense" or not attrs.get("source"):
        return None
    path = Path(attrs["source"]) / LABELS_CSV
    if not path.is_file():
        return None
    columns, rows = read_labels_csv(path)
    if column not in columns:
        return None
    for name, row in rows.items():
        cell = (row.get(column) or "").strip()
        try:
            float(cell or "nan")
        except ValueError:
            return f"{cell!r} for {name}"
    return None


def regression_subset(data: LensData, targets: Sequence[str],
                      classes: Sequence[str] | None = None, source: str = "the data",
                      skip_nan: bool = False) -> Subset:
    """Images of ``classes`` (default: the targets' own) and their target values; NaN
    targets are an error, or dropped with ``skip_nan`` (see the module docstring)."""
    if not targets:
        raise DarklensError("no regression target given")
    missing = [t for t in targets if t not in data.metadata]
    for t in missing:
        bad = _non_numeric(data, t)
        if bad:
            raise DataError(f"{source}: label column {t!r} of {LABELS_CSV} is not numeric "
                            f"({bad})")
    if missing:
        scalar = sorted(k for k, v in data.metadata.items() if np.asarray(v).ndim == 1)
        raise DataError(f"{source}: no label column {', '.join(missing)} (HDF5 metadata or "
                        f"labels.csv); available: {', '.join(scalar) or 'none'}")
    for t in targets:
        if np.asarray(data.metadata[t]).ndim != 1:
            raise DataError(f"{source}: label column {t!r} is not one number per image")
    present = [c for i, c in enumerate(data.class_names) if np.any(data.labels == i)]
    if classes is None:
        classes = default_classes(targets, present)
    else:
        bad = [c for c in classes if c not in data.class_names]
        if bad:
            raise DarklensError(f"unknown class {bad[0]!r}; known: {', '.join(data.class_names)}")
    class_ids = [data.class_names.index(c) for c in classes]
    in_class = np.isin(data.labels, class_ids)
    if not in_class.any():
        raise DataError(f"{source}: no images of class {', '.join(classes)} (needed for "
                        f"{', '.join(targets)})")
    values = np.stack([np.asarray(data.metadata[t], dtype=np.float64) for t in targets], axis=1)
    messages = []
    finite = np.isfinite(values).all(axis=1)
    for j, t in enumerate(targets):
        nan = in_class & ~np.isfinite(values[:, j])
        if nan.sum() == in_class.sum():
            hint = ""
            if t == "log10_axion_mass":
                preset = data.attrs.get("preset", {}) if isinstance(data.attrs, dict) else {}
                name = preset.get("name", "unknown") if isinstance(preset, dict) else "unknown"
                hint = (f" The preset ({name}) does not tie the vortex length to an axion mass;"
                        f" simulate with one that does: {', '.join(AXION_PRESETS)}.")
            raise DataError(f"{source}: {t} is NaN (undefined) for all {int(in_class.sum())} "
                            f"images of class {', '.join(classes)}.{hint}")
        if nan.any() and not skip_nan:
            files = data.attrs.get("files") if isinstance(data.attrs, dict) else None
            where = np.flatnonzero(nan)[:3]
            names = ", ".join(str(files[i]) if files is not None and len(files) == len(data)
                              else f"image {i}" for i in where)
            raise DataError(f"{source}: {t} is NaN for {int(nan.sum())} of "
                            f"{int(in_class.sum())} images of class {', '.join(classes)} "
                            f"(first: {names}); fix the labels or drop them with --skip-nan")
        if nan.any():
            messages.append(f"excluded {int(nan.sum())} of {int(in_class.sum())} images whose "
                            f"{t} is NaN")
    keep = np.flatnonzero(in_class & finite)
    return Subset(keep, values[keep], list(classes), messages)
