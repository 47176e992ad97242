"""Picture galleries of lensing images, one row per class."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from darklens.data.lensdata import LensData  # noqa: E402
from darklens.io import atomic_path  # noqa: E402

CLASS_TITLES = {"no_sub": "no substructure", "cdm": "CDM subhalos", "vortex": "vortex"}


def _caption(data: LensData, i: int) -> str:
    m = data.metadata
    parts = []
    if "theta_e" in m:
        parts.append(f'θE {m["theta_e"][i]:.2f}"')
    name = data.class_names[int(data.labels[i])] if data.labels[i] >= 0 else "?"
    if name == "cdm" and "n_subhalos" in m:
        parts.append(f"{int(m['n_subhalos'][i])} subhalos")
    if name == "vortex" and "vortex_length" in m:
        parts.append(f'L {m["vortex_length"][i]:.2f}"')
    if "substructure_chi2" in m and name != "no_sub" and np.isfinite(m["substructure_chi2"][i]):
        parts.append(f"χ² {m['substructure_chi2'][i]:.0f}")
    return "\n".join([", ".join(parts[:2]), ", ".join(parts[2:])]).strip()


def gallery(
    data: LensData, path: str | Path, per_class: int = 6, title: str = "", dpi: int = 110
) -> Path:
    """Write a PNG grid: one row per class present, ``per_class`` images each."""
    present = [c for i, c in enumerate(data.class_names) if np.any(data.labels == i)]
    if not present:
        raise ValueError("no labelled images to show")
    fig, axes = plt.subplots(
        len(present), per_class, figsize=(1.9 * per_class, 2.2 * len(present)), squeeze=False
    )
    for row, name in enumerate(present):
        idx = np.flatnonzero(data.labels == data.class_names.index(name))[:per_class]
        for col in range(per_class):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            if col >= len(idx):
                ax.axis("off")
                continue
            i = idx[col]
            ax.imshow(data.images[i, 0], cmap="inferno", origin="lower")
            ax.set_xlabel(_caption(data, i), fontsize=7)
            if col == 0:
                ax.set_ylabel(CLASS_TITLES.get(name, name), fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
    return path
