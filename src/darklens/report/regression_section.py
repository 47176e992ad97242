"""The report's regression section: metrics, calibration against the truth and population
estimates of every regression run a benchmark records or holds."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from darklens.report import figures
from darklens.report.html_parts import img as _img
from darklens.report.html_parts import note as _note
from darklens.report.html_parts import num as _num
from darklens.report.html_parts import table as _table
from darklens.report.regression_figures import calibration_plot


def regression_section(results: dict[str, Any], bench: Path) -> str:
    """The section's HTML body, or "" where there is no regression run."""
    entries = list(results.get("regression") or [])
    found = {str(Path(e["run"]).resolve()) for e in entries}
    for metrics in sorted((bench / "regression").glob("*/metrics.json")):
        run = str(metrics.parent.resolve())
        if run not in found:
            entries.append({"run": run, "metrics": json.loads(metrics.read_text())})
    if not entries:
        return ""
    keys = ("mae", "rmse", "r2", "bias", "coverage_68", "coverage_95")
    rows, imgs = [], []
    for e in entries:
        run = Path(e["run"])
        per_target = e["metrics"].get("targets", {})
        for t, m in per_target.items():
            rows.append([run.name, t] + [_num(m.get(k), 3) for k in keys])
        pred = run / "predictions.csv"
        if pred.exists():
            with open(pred) as fh:
                table = list(csv.DictReader(fh))
            for t in per_target:
                cols = [f"{t}_true", f"{t}_mean", f"{t}_sigma"]
                if table and all(c in table[0] for c in cols):
                    truth, mean, sigma = (np.array([float(r[c]) for r in table]) for c in cols)
                    imgs.append(_img(figures.prediction_figure(truth, mean, sigma, t),
                                     f"{run.name} {t}"))
    out = (_note("Regression runs (`darklens regress evaluate`): metrics on their held-out "
                 "test images; figures: prediction ± 1σ against truth.")
           + _table(["run", "target", *keys], rows))
    cal_rows, cal_imgs = regression_calibration(entries)
    if cal_rows:
        out += (_note("Calibration against the truth: SBC rank uniformity (χ² p), TARP expected "
                      "coverage at 0.68 and 0.95, and the range of true values where the "
                      "posterior contracts the prior's variance by 90% or more (measurable).")
                + _table(["run", "target", "posterior", "SBC p", "TARP 68", "TARP 95",
                          "measurable range"], cal_rows) + "".join(cal_imgs))
    pops = _population_rows([Path(e["run"]) for e in entries])
    if pops:
        out += (_note("Population estimates (`darklens regress population --out "
                      "RUN/population*.json`): the lenses combined with the training prior "
                      "divided out; pull = (estimate − true mean) / σ.")
                + _table(["run", "file", "target", "model", "N lenses", "estimate ± σ",
                          "true mean", "pull"], pops))
    return out + "".join(imgs)


def regression_calibration(entries: list[dict[str, Any]]) -> tuple[list[list[str]], list[str]]:
    """Rows (SBC p, TARP, measurable range) and calibration figures of the evaluated runs
    whose metrics carry them."""
    rows, imgs = [], []
    for e in entries:
        run, metrics = Path(e["run"]), e["metrics"]
        for t, m in (metrics.get("targets") or {}).items():
            cal = m.get("calibration") if isinstance(m, dict) else None
            if not cal:
                continue
            rng = (m.get("identifiability") or {}).get("measurable_range")
            rows.append([run.name, t, str(metrics.get("posterior", "gaussian")),
                         _num(cal["sbc"]["p_value"], 3), _num(cal["tarp"]["ecp_68"], 3),
                         _num(cal["tarp"]["ecp_95"], 3),
                         "none" if rng is None else f"[{rng[0]:.3g}, {rng[1]:.3g}]"])
            imgs.append(_img(calibration_plot(t, m), f"{run.name} {t} calibration"))
    return rows, imgs


def _population_rows(runs: list[Path]) -> list[list[str]]:
    """One row per ``population*.json`` a regression run holds (unreadable ones skipped)."""
    rows = []
    for run in runs:
        for f in sorted(run.glob("population*.json")):
            try:
                r = json.loads(f.read_text())
                est = f"{float(r['estimate']):.4g} ± {float(r['sigma']):.2g}"
            except (OSError, ValueError, TypeError, KeyError):
                continue
            true = r.get("true_mean")
            rows.append([run.name, f.name, str(r.get("target")), str(r.get("model")),
                         str(r.get("n_lenses")), est,
                         "-" if true is None else f"{float(true):.4g}", _num(r.get("pull"), 2)])
    return rows
