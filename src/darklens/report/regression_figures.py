"""Figures of a regression evaluation: prediction vs truth with error bars, residuals vs truth,
and calibration (SBC ranks, TARP, coverage and contraction in bins of the truth)."""

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


def calibration_figure(target: str, metrics: dict, out_dir: str | os.PathLike) -> Path:
    """Write ``calibration_<target>.png`` (``calibration_plot``); return its path."""
    path = Path(out_dir) / f"calibration_{target}.png"
    _save(calibration_plot(target, metrics), path)
    return path


def calibration_plot(target: str, metrics: dict) -> plt.Figure:
    """SBC rank histogram, TARP expected coverage, coverage and contraction in bins of the
    truth, from one target's ``metrics.json`` entry."""
    cal, ident = metrics["calibration"], metrics.get("identifiability")
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    sbc = cal["sbc"]
    edges, counts = np.asarray(sbc["edges"]), np.asarray(sbc["counts"])
    ax = axes[0]
    ax.stairs(counts, edges, fill=True, alpha=0.6)
    ints = np.diff(np.ceil(edges))
    ax.stairs(counts.sum() * ints / ints.sum(), edges, color="k", ls="--", label="uniform")
    ax.set_xlabel(f"rank of the truth among {sbc['n_draws']} draws")
    ax.set_title(f"SBC ranks (chi2 p = {sbc['p_value']:.3g})")
    ax.legend(loc="lower center")
    ax = axes[1]
    tarp = cal["tarp"]
    ax.plot(tarp["alpha"], tarp["ecp"], label="expected coverage")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="calibrated")
    ax.set_xlabel("credibility level")
    ax.set_ylabel("expected coverage")
    ax.set_title(f"TARP: {tarp['ecp_68']:.3f} at 0.68, {tarp['ecp_95']:.3f} at 0.95")
    ax.legend(loc="upper left")
    ax = axes[2]
    cov = cal["coverage_by_truth"]
    centres = _centres(cov["edges"])
    for key, nominal, c in (("coverage_68", 0.68, "C0"), ("coverage_95", 0.95, "C1")):
        ax.plot(centres, _nan(cov[key]), "o-", color=c, label=f"central {nominal:.0%}")
        ax.axhline(nominal, color=c, ls="--", lw=1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(f"true {target}")
    ax.set_title("coverage in bins of the truth")
    ax.legend(loc="lower left")
    ax = axes[3]
    if ident:
        ax.plot(_centres(ident["edges"]), _nan(ident["contraction"]), "o-", color="C2")
        ax.axhline(ident["threshold"], color="k", ls="--", lw=1, label="measurable")
        ax.set_ylim(min(0.0, np.nanmin(_nan(ident["contraction"])) - 0.05), 1.02)
        ax.legend(loc="lower left")
    ax.set_xlabel(f"true {target}")
    ax.set_ylabel("1 - var(posterior) / var(prior)")
    ax.set_title("prior-to-posterior contraction")
    fig.tight_layout()
    return fig


def _centres(edges: list[float]) -> np.ndarray:
    e = np.asarray(edges, dtype=float)
    return 0.5 * (e[1:] + e[:-1])


def _nan(values: list) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)
