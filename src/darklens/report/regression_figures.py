"""Figures of a regression evaluation: prediction vs truth with error bars, residuals vs truth."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from darklens.io import atomic_path  # noqa: E402

MAX_POINTS = 2000  # error bars of more points only clutter the figure


def _subsample(n: int, seed: int = 0) -> np.ndarray:
    if n <= MAX_POINTS:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, MAX_POINTS, replace=False))


def _save(fig: plt.Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def regression_figures(target: str, truth: np.ndarray, mean: np.ndarray, sigma: np.ndarray,
                       out_dir: str | os.PathLike, title: str = "") -> list[Path]:
    """Write ``pred_vs_truth_<target>.png`` and ``residuals_<target>.png``; return the paths."""
    out = Path(out_dir)
    idx = _subsample(len(truth))
    t, m, s = truth[idx], mean[idx], sigma[idx]
    lo, hi = float(np.min(truth)), float(np.max(truth))
    pad = 0.05 * (hi - lo or 1.0)

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.errorbar(t, m, yerr=s, fmt="o", ms=2, alpha=0.4, elinewidth=0.6, color="C0")
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k--", lw=1, label="truth")
    ax.set_xlabel(f"true {target}")
    ax.set_ylabel(f"predicted {target} (mean +- 1 sigma)")
    ax.set_title(title or f"{target}: prediction vs truth")
    ax.legend(loc="upper left")
    p1 = out / f"pred_vs_truth_{target}.png"
    _save(fig, p1)

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar(t, m - t, yerr=s, fmt="o", ms=2, alpha=0.4, elinewidth=0.6, color="C1")
    ax.axhline(0, color="k", lw=1, ls="--")
    ax.set_xlabel(f"true {target}")
    ax.set_ylabel("prediction - truth (+- 1 sigma)")
    ax.set_title(title or f"{target}: residuals")
    p2 = out / f"residuals_{target}.png"
    _save(fig, p2)
    return [p1, p2]
