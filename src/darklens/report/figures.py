"""Figures of the benchmark report (matplotlib); each function returns a Figure.

The caller embeds them (``report.html``); nothing here reads files or knows about runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_auc_score, roc_curve  # noqa: E402

CLASS_COLOURS = {"no_sub": "#4c72b0", "cdm": "#dd8452", "vortex": "#55a868"}


def _colour(name: str, i: int) -> str:
    return CLASS_COLOURS.get(name, f"C{i % 10}")


def roc_figure(curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]],
               classes: Sequence[str]) -> plt.Figure:
    """One panel per anomaly class; ``curves[detector][cls] = (y_true, scores)``."""
    fig, axes = plt.subplots(1, len(classes), figsize=(4.2 * len(classes), 4), squeeze=False)
    for ax, cls in zip(axes[0], classes, strict=True):
        for i, (det, per_cls) in enumerate(curves.items()):
            if cls not in per_cls:
                continue
            y, s = per_cls[cls]
            fpr, tpr, _ = roc_curve(y, s)
            ax.plot(fpr, tpr, lw=1.5, color=f"C{i % 10}",
                    label=f"{det} ({roc_auc_score(y, s):.3f})")
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set_title(f"{cls} against normal")
        ax.set_xlabel("false-positive rate")
        ax.set_ylabel("true-positive rate")
        ax.legend(fontsize=7, loc="lower right", title="AUROC", title_fontsize=7)
        ax.set_aspect("equal")
    fig.tight_layout()
    return fig


def histogram_figure(scores: dict[str, dict[str, np.ndarray]], normal: str,
                     classes: Sequence[str]) -> plt.Figure:
    """Rows: detectors; columns: anomaly classes; normal vs that class, shared bins per row.

    Scores spanning more than a factor 50 (all positive) get logarithmic bins and axis.
    """
    dets = list(scores)
    fig, axes = plt.subplots(len(dets), len(classes), squeeze=False,
                             figsize=(3.6 * len(classes), 2.3 * len(dets)))
    for r, det in enumerate(dets):
        every = np.concatenate([v for v in scores[det].values() if v.size])
        lo, hi = np.quantile(every, [0.005, 0.995]) if every.size else (0.0, 1.0)
        log = lo > 0 and hi / lo > 50  # heavy tail (distances): log bins show both bulks
        bins = (np.geomspace(lo, hi, 31) if log
                else np.linspace(lo, hi if hi > lo else lo + 1.0, 31))
        for c, cls in enumerate(classes):
            ax = axes[r, c]
            for name in (normal, cls):
                v = np.clip(scores[det].get(name, np.zeros(0)), bins[0], bins[-1])
                ax.hist(v, bins=bins, weights=np.full(v.size, 1.0 / max(v.size, 1)),
                        alpha=0.55, label=name, color=_colour(name, c))  # fraction per bin
            ax.set_yticks([])
            if log:
                ax.set_xscale("log")
            if c == 0:
                ax.set_ylabel(det, fontsize=9)
            if r == 0:
                ax.set_title(f"{normal} vs {cls}", fontsize=9)
            if r == len(dets) - 1:
                ax.set_xlabel("anomaly score", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def image_grid(images: np.ndarray, captions: Sequence[str], ncols: int,
               row_titles: Sequence[str] | None = None, title: str = "",
               size: float = 1.35) -> plt.Figure:
    """A grid of single-channel images (N, 1, H, W) or (N, H, W), filled row by row."""
    n = len(images)
    nrows = max(1, math.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, (size + 0.3) * nrows),
                             squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if k >= n:
            ax.axis("off")
            continue
        img = np.asarray(images[k])
        ax.imshow(img[0] if img.ndim == 3 else img, cmap="inferno", origin="lower")
        ax.set_xlabel(captions[k], fontsize=6.5)
        if row_titles is not None and k % ncols == 0:
            ax.set_ylabel(row_titles[k // ncols], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def training_curves_figure(histories: dict[str, list[dict[str, float]]]) -> plt.Figure:
    """One panel per detector: every loss column of its losses.csv against the epoch."""
    dets = list(histories)
    ncols = min(4, max(1, len(dets)))
    nrows = math.ceil(len(dets) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 2.8 * nrows), squeeze=False)
    for ax, det in zip(axes.flat, dets, strict=False):
        rows = histories[det]
        epochs = [r.get("epoch", i + 1) for i, r in enumerate(rows)]
        keys = [k for k in rows[0] if k.startswith("train") or k == "val_loss"] if rows else []
        for i, key in enumerate(keys):
            ax.plot(epochs, [r.get(key, np.nan) for r in rows], marker="o", ms=3,
                    color=f"C{i}", label=key)
        ax.set_title(det, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
        if keys:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(dets):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def embedding_figure(maps: dict[str, tuple[np.ndarray, np.ndarray, str]],
                     class_names: Sequence[str]) -> plt.Figure:
    """One scatter panel per detector: ``maps[det] = (points (N, 2), labels, method)``."""
    dets = list(maps)
    ncols = min(4, max(1, len(dets)))
    nrows = math.ceil(len(dets) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 3.2 * nrows), squeeze=False)
    for ax, det in zip(axes.flat, dets, strict=False):
        pts, labels, method = maps[det]
        for i, cls in enumerate(class_names):
            sel = labels == i
            if sel.any():
                ax.scatter(pts[sel, 0], pts[sel, 1], s=5, alpha=0.6, color=_colour(cls, i),
                           label=cls, linewidths=0)
        ax.set_title(f"{det} ({method})", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(fontsize=7, markerscale=2)
    for ax in list(axes.flat)[len(dets):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def detectability_figure(curves: dict[str, dict[str, list[list[dict[str, float]]]]],
                         classes: Sequence[str]) -> plt.Figure:
    """AUROC against substructure chi2 per anomaly class; mean (and spread) over seeds.

    ``curves[detector][cls]`` is a list over seeds of bin rows (``evaluate.detectability``).
    """
    fig, axes = plt.subplots(1, len(classes), figsize=(4.4 * len(classes), 3.6), squeeze=False)
    for ax, cls in zip(axes[0], classes, strict=True):
        plotted = False
        for i, (det, per_cls) in enumerate(curves.items()):
            seeds = per_cls.get(cls)
            if not seeds:
                continue
            x = _nan_reduce(np.nanmean, [[b["median_chi2"] for b in rows] for rows in seeds])
            y = np.array([[b["auroc"] for b in rows] for rows in seeds], dtype=np.float64)
            if not (np.isfinite(y).any() and (x[np.isfinite(x)] > 0).any()):
                continue
            plotted = True
            ax.plot(x, _nan_reduce(np.nanmean, y), marker="o", ms=4, color=f"C{i % 10}",
                    label=det)
            if len(seeds) > 1:
                ax.fill_between(x, _nan_reduce(np.nanmin, y), _nan_reduce(np.nanmax, y),
                                color=f"C{i % 10}", alpha=0.15, lw=0)
        ax.axhline(0.5, color="k", ls=":", lw=0.8)
        if plotted:
            ax.set_xscale("log")
        else:
            ax.text(0.5, 0.6, "too few test images per bin", ha="center",
                    transform=ax.transAxes)
        ax.set_ylim(0.3, 1.02)
        ax.set_xlabel("substructure χ² (bin median)")
        ax.set_ylabel("AUROC in bin")
        ax.set_title(f"{cls}: where detection stops")
        if plotted:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def information_plane_figure(families: dict[str, list[dict]],
                             colour_label: str = "test AUROC") -> plt.Figure:
    """The information plane: InfoNCE bound on I(X, Z) against the entropy bound R(z).

    ``families[name]`` is a list of points, each a dict with ``entropy_bound`` and
    ``infonce_bound`` (the last epoch's terms), optional ``auroc`` (colours the point; grey
    without), ``label`` (written next to it, e.g. "beta=0.1") and ``path`` (the per-epoch
    (entropy_bound, infonce_bound) pairs, drawn thin). A family's points are joined in the given
    order (e.g. increasing beta), so a real trade-off shows as a line running down and left.
    """
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    aurocs = [p["auroc"] for pts in families.values() for p in pts
              if p.get("auroc") is not None and np.isfinite(p["auroc"])]
    norm = plt.Normalize(min(aurocs), max(aurocs)) if aurocs else None
    cmap = plt.get_cmap("viridis")
    markers = "osD^v<>"
    positive = True
    for i, (name, pts) in enumerate(families.items()):
        xs = [p["entropy_bound"] for p in pts]
        ys = [p["infonce_bound"] for p in pts]
        positive = positive and all(x > 0 for x in xs)
        for p in pts:
            if p.get("path"):
                px, py = zip(*p["path"], strict=True)
                ax.plot(px, py, color="0.75", lw=0.7, zorder=1)
        ax.plot(xs, ys, color=f"C{i % 10}", lw=1.2, zorder=2, label=name)
        colours = [cmap(norm(p["auroc"])) if norm is not None and p.get("auroc") is not None
                   else "0.6" for p in pts]
        ax.scatter(xs, ys, c=colours, marker=markers[i % len(markers)], s=46,
                   edgecolors="k", linewidths=0.6, zorder=3)
        for p, x, y in zip(pts, xs, ys, strict=True):
            if p.get("label"):
                ax.annotate(p["label"], (x, y), textcoords="offset points", xytext=(4, 4),
                            fontsize=7)
    if positive and any(families.values()):
        ax.set_xscale("log")
    if norm is not None:
        fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=colour_label)
    ax.set_xlabel("entropy bound  mean R(z)")
    ax.set_ylabel("InfoNCE bound on I(X, Z)  [nats]")
    ax.set_title("information plane", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _nan_reduce(fn, rows) -> np.ndarray:
    """``fn`` over seeds (axis 0), NaN where every seed is NaN (without a warning)."""
    a = np.asarray(rows, dtype=np.float64)
    out = np.full(a.shape[1:], np.nan)
    ok = np.isfinite(a).any(axis=0)
    out[ok] = fn(a[:, ok], axis=0)
    return out


def prediction_figure(truth: np.ndarray, mean: np.ndarray, sigma: np.ndarray,
                      target: str) -> plt.Figure:
    """Regression: prediction (+- 1 sigma) against truth."""
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    keep = np.arange(len(truth))
    if len(keep) > 1000:
        keep = np.sort(np.random.default_rng(0).choice(len(truth), 1000, replace=False))
    ax.errorbar(truth[keep], mean[keep], yerr=sigma[keep], fmt="o", ms=2, alpha=0.4,
                elinewidth=0.5)
    lo, hi = float(np.min(truth)), float(np.max(truth))
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.set_xlabel(f"true {target}")
    ax.set_ylabel(f"predicted {target}")
    ax.set_title(target, fontsize=9)
    fig.tight_layout()
    return fig
