"""Picture galleries of lensing images, one row per class, and where-map overlays.

``overlay_rgb`` / ``save_overlay`` draw an image with its where-map (what makes it anomalous,
:mod:`darklens.evaluate.where_maps`) on top: ``darklens score --maps`` writes one per image and
the report shows them for the most anomalous test images (``where_map_panels``).
"""

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


def overlay_rgb(image: np.ndarray, amap: np.ndarray, zoom: int = 4) -> np.ndarray:
    """An RGB picture (H*zoom, W*zoom, 3) of ``image`` (H, W) in grey (square-root stretch)
    with its where-map ``amap`` (H, W) on top (inferno, opacity growing with the map; its 99th
    percentile is the top of the scale) and a cyan cross at the map's maximum."""
    img = np.asarray(image, dtype=np.float64)
    lo, hi = np.percentile(img, [1, 99.5])
    grey = np.sqrt(np.clip((img - lo) / (hi - lo if hi > lo else 1.0), 0, 1))  # faint arcs
    m = np.nan_to_num(np.asarray(amap, dtype=np.float64), nan=0.0)
    m = m - np.median(m)
    top = np.percentile(m, 99)
    m = np.clip(m / (top if top > 0 else 1.0), 0, 1)
    heat = plt.get_cmap("inferno")(m)[..., :3]
    alpha = 0.7 * m[..., None]
    rgb = (1 - alpha) * grey[..., None] + alpha * heat
    rgb = np.kron(rgb, np.ones((zoom, zoom, 1)))
    r, c = np.unravel_index(int(np.argmax(np.nan_to_num(amap, nan=-np.inf))), m.shape)
    cy, cx, arm = r * zoom + zoom // 2, c * zoom + zoom // 2, 2 * zoom
    rgb[max(0, cy - arm):cy + arm + 1, max(0, cx - 1):cx + 2] = (0, 1, 1)
    rgb[max(0, cy - 1):cy + 2, max(0, cx - arm):cx + arm + 1] = (0, 1, 1)
    return rgb


def save_overlay(path: str | Path, image: np.ndarray, amap: np.ndarray, zoom: int = 4) -> Path:
    """Write ``overlay_rgb`` as a PNG, atomically (row 0 at the bottom, as the galleries)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        plt.imsave(tmp, overlay_rgb(image, amap, zoom)[::-1], format="png")
    return path


def where_map_grid(images: np.ndarray, maps: np.ndarray, captions: list[str], ncols: int = 8,
                   title: str = "") -> plt.Figure:
    """A figure of where-map overlays (one panel per image), for the report."""
    n = len(images)
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.6 * ncols, 1.8 * nrows), squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        ax.set_xticks([])
        ax.set_yticks([])
        if k >= n:
            ax.axis("off")
            continue
        ax.imshow(overlay_rgb(images[k, 0], maps[k], zoom=2), origin="lower")
        ax.set_xlabel(captions[k], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def where_map_panels(run_dir: str | Path, images: np.ndarray, captions: list[str],
                     title: str = "") -> tuple[plt.Figure | None, str]:
    """The where-map overlays of ``images`` (as stored; normalised here as the run was) by the
    detector saved in ``run_dir``: a figure (None if the run cannot be loaded) and a note
    saying which kind of map it is."""
    import torch

    from darklens.data.dataset import Normaliser
    from darklens.evaluate.where_maps import where_map_kind, where_maps
    from darklens.models.persistence import load_run, read_run_config

    try:
        detector = load_run(run_dir)
        config = read_run_config(run_dir)
    except Exception as err:  # a report should still be written
        return None, f"cannot load the run ({err})"
    if config.get("input", {}).get("kind", "raw") != "raw":
        return None, "learned on residual maps: no map of the raw images"
    x = Normaliser.from_dict(config.get("normaliser", {"mode": "none"}))(images)
    kind = where_map_kind(detector, torch.as_tensor(x))
    maps = where_maps(detector, x)
    what = "the detector's own map" if kind == "own" else "occlusion saliency of its score"
    return where_map_grid(images, maps, captions, ncols=len(images), title=title), what
