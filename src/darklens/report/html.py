"""The benchmark report: ONE self-contained ``report.html`` (figures inlined as PNG data URIs).

``write_report(bench_dir)`` reads ``results.json``, the run directories and the data set of a
`darklens benchmark` and writes ``bench_dir/report.html``: the summary table; ROC curves per
anomaly class; score histograms; example images per class; the most and least anomalous test
images; training curves; a 2-D map of each learned representation; the detectability curve
(AUROC in bins of ``substructure_chi2``); a regression section when regression runs are
recorded; the configuration, versions and machine. Nothing is linked from outside the file, so
it opens offline; a small inline script marks ``<body>`` with ``data-loaded``, the number of
images that failed to load and any script errors (read by the browser test).

Memory. The report never holds the data set: HDF5 shards are opened lazily
(``report_data``: labels, class names and the ``substructure_chi2`` column up front, a few
bytes per image) and only the images a figure shows are read, through a cache of at most
``cache_mb`` MiB: 8 per class for the examples, 8 + 8 and 6 per detector for the extremes
and where-maps, and for the representation maps at most ``max_embed`` test images (a seeded
random subset when there are more, which the report says). Scores come from the runs'
``test_scores.csv``. Other formats (``.npy`` folders) are loaded whole, as the benchmark
loads them.
"""

from __future__ import annotations

import csv
import html
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from darklens.benchmark import RESULTS, data_path, format_mean_std, read_test_scores
from darklens.io import write_text_atomic
from darklens.report import figures
from darklens.report.html_parts import img as _img
from darklens.report.html_parts import note as _note
from darklens.report.html_parts import num as _num
from darklens.report.html_parts import section as _section
from darklens.report.html_parts import table as _table
from darklens.report.image_sections import (
    REPORT_CACHE_MB,
    captions,
    detectability_section,
    report_data,
    representation,
    where_maps,
)
from darklens.report.regression_section import regression_section

REPORT = "report.html"

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0 auto;max-width:1180px;
padding:16px 24px;color:#222;line-height:1.4}
h1{margin-bottom:2px} h2{border-bottom:1px solid #ccc;padding-bottom:3px;margin-top:32px}
.sub{color:#666;margin-top:0} table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:right} th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left} img{max-width:100%;height:auto;display:block;
margin:6px 0} pre{background:#f7f7f7;padding:8px;overflow-x:auto;font-size:11px;max-height:420px}
.note{color:#555;font-size:13px} nav a{margin-right:10px;font-size:13px}
"""

# Marks <body> when every image has loaded (or failed) and records script/console errors,
# so that a headless browser's --dump-dom shows what happened.
CHECK_SCRIPT = """
(function(){
  var errs=[];
  window.addEventListener('error',function(e){
    var t=e.target;
    errs.push(t&&t.tagName?('resource failed: '+t.tagName):('error: '+e.message));},true);
  var ce=console.error;
  console.error=function(){errs.push('console.error: '+Array.prototype.join.call(arguments,' '));
    return ce.apply(console,arguments);};
  window.addEventListener('load',function(){
    var imgs=Array.prototype.slice.call(document.images);
    var bad=imgs.filter(function(i){return !(i.complete&&i.naturalWidth>0);});
    var b=document.body;
    b.setAttribute('data-images',String(imgs.length));
    b.setAttribute('data-images-broken',String(bad.length));
    b.setAttribute('data-errors',String(errs.length));
    b.setAttribute('data-error-messages',errs.join(' | '));
    b.setAttribute('data-loaded','1');
  });
})();
"""


def summary_rows(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the summary table (mean +- std over seeds), shared with the CLI."""
    classes = [c for c in results["data"]["class_names"]
               if c != results["benchmark"]["normal"]]
    header = (["detector"] + [f"AUROC {c}" for c in ["all", *classes]]
              + ["AUPRC all", "TPR@1%FPR all", "epochs", "train s", "img/s"])
    rows = []
    for det, s in results["summary"].items():
        rows.append([det] + [format_mean_std(s["auroc"].get(c)) for c in ["all", *classes]]
                    + [format_mean_std(s["auprc"].get("all")),
                       format_mean_std(s["tpr_at_fpr_0.01"].get("all")),
                       _num(s["epochs_run"]["mean"], 1), _num(s["train_seconds"]["mean"], 0),
                       _num(s["images_per_second"]["mean"], 0)])
    return header, rows


def _runs(results: dict[str, Any], bench: Path) -> dict[str, list[tuple[int, Path]]]:
    """Per detector: (seed, run dir) for every seed, in seed order."""
    out: dict[str, list[tuple[int, Path]]] = {}
    for det, entry in results["detectors"].items():
        out[det] = sorted((int(s), bench / "runs" / r["run_dir"])
                          for s, r in entry["seeds"].items())
    return out


def _read_losses(run_dir: Path) -> list[dict[str, float]]:
    path = run_dir / "losses.csv"
    if not path.exists():
        return []
    with open(path) as fh:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)}
                for row in csv.DictReader(fh)]


def information_plane_points(results: dict[str, Any],
                             runs: dict[str, list[tuple[int, Path]]]) -> dict[str, list[dict]]:
    """Per detector, one point per seed whose losses.csv records ``infonce_bound`` and
    ``entropy_bound``: the last epoch's pair, its per-epoch path and the seed's test AUROC."""
    out: dict[str, list[dict]] = {}
    for det, seeds in runs.items():
        for seed, run_dir in seeds:
            rows = [r for r in _read_losses(run_dir)
                    if "infonce_bound" in r and "entropy_bound" in r]
            if not rows:
                continue
            rec = results["detectors"][det]["seeds"].get(str(seed), {})
            auroc = rec.get("metrics", {}).get("auroc", {}).get("all")
            out.setdefault(det, []).append({
                "entropy_bound": rows[-1]["entropy_bound"],
                "infonce_bound": rows[-1]["infonce_bound"], "auroc": auroc,
                "label": f"seed {seed}",
                "path": [(r["entropy_bound"], r["infonce_bound"]) for r in rows]})
    return out


def build_report(bench_dir: str | os.PathLike, max_embed: int = 600,
                 log: Callable[[str], None] | None = None,
                 cache_mb: float = REPORT_CACHE_MB) -> str:
    """The report's HTML text (see the module docstring); ``log`` hears of each section.
    ``max_embed``: most test images in a representation map; ``cache_mb``: the image cache
    when the data are HDF5 shards (``report_data``)."""
    bench = Path(bench_dir)
    results = json.loads((bench / RESULTS).read_text())
    data = report_data(data_path(results, bench), cache_mb)
    normal = results["benchmark"]["normal"]
    names = list(data.class_names)
    anomalies = [c for c in names if c != normal and (data.labels == names.index(c)).any()]
    runs = _runs(results, bench)
    first_seed = {det: r[0] for det, r in runs.items() if r}
    scores = {det: read_test_scores(d) for det, (_, d) in first_seed.items()}
    sections: list[tuple[str, str, str]] = []

    def add(section: tuple[str, str, str]) -> None:
        sections.append(section)
        if log is not None:
            log(f"report: {section[1].split(' (')[0]}")

    # --- summary
    header, rows = summary_rows(results)
    spec = results["benchmark"]
    seeds = spec["seeds"]
    budget = results.get("budget", {})
    intro = (f"{len(seeds)} seed(s) ({', '.join(map(str, seeds))}); mean ± standard deviation "
             f"over seeds. Every detector of a seed trains on the same normal images and is "
             f"tested on the same held-out images (split seeded by the seed).")
    if budget.get("seconds_per_run"):
        intro += (f" Training budget {budget['minutes']:g} min in all: "
                  f"{budget['seconds_per_run']:.0f} s per training run.")
    n_test = next(iter(results["detectors"].values()))["seeds"][str(seeds[0])]["n_test"]
    intro += " Test images (first seed): " + ", ".join(f"{k} {v}" for k, v in n_test.items())
    add(("summary", "Summary", _note(intro) + _table(header, rows)))

    # --- ROC and histograms (first seed)
    curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    hist: dict[str, dict[str, np.ndarray]] = {}
    for det, (idx, s) in scores.items():
        lab = data.labels[idx]
        is_normal = lab == names.index(normal)
        curves[det] = {}
        for cls in ["all", *anomalies]:
            pos = ~is_normal if cls == "all" else lab == names.index(cls)
            keep = is_normal | pos
            if pos.any() and is_normal.any():
                curves[det][cls] = (pos[keep].astype(int), s[keep])
        hist[det] = {c: s[lab == names.index(c)] for c in [normal, *anomalies]}
    add(("roc", "ROC curves (first seed)",
                     _img(figures.roc_figure(curves, ["all", *anomalies]), "ROC curves")))
    add(("histograms", "Score histograms (first seed)",
                     _note(f"Anomaly scores of the {normal} test images against each anomaly "
                           "class (higher = more anomalous; axes clipped to the central 99%).")
                     + _img(figures.histogram_figure(hist, normal, anomalies),
                            "score histograms")))

    # --- galleries
    rng = np.random.default_rng(0)
    per_class = 8
    pick = []
    titles = []
    for c in [normal, *anomalies]:
        idx = np.flatnonzero(data.labels == names.index(c))
        chosen = np.sort(rng.choice(idx, min(per_class, idx.size), replace=False))
        pick.extend(chosen.tolist() + [-1] * (per_class - chosen.size))
        titles.append(c)
    pick_arr = np.array(pick)
    ok = pick_arr >= 0
    imgs = np.zeros((len(pick),) + data.images.shape[1:], np.float32)
    imgs[ok] = data.images[pick_arr[ok]]
    caps = [(captions(data, np.array([i]))[0] if i >= 0 else "") for i in pick]
    body = _img(figures.image_grid(imgs, caps, per_class, titles), "examples per class")
    ext = []
    for det, (idx, s) in scores.items():
        order = np.argsort(s)
        k = min(8, len(order) // 2)
        top, bottom = order[::-1][:k], order[:k]
        sel = np.r_[top, bottom]
        ext.append(f"<h3>{html.escape(det)}</h3>" + _img(figures.image_grid(
            data.images[idx[sel]], captions(data, idx[sel], s[sel]), k,
            ["most anomalous", "least anomalous"]), f"{det} extremes"))
    add(("gallery", "Example images", body))
    add(("extremes", "Most and least anomalous test images (first seed)",
                     _note("Top row: the highest scores; bottom row: the lowest (s = score).")
                     + "".join(ext)))
    add(("where-maps", "Where-maps of the most anomalous test images (first seed)",
         where_maps(first_seed, data, scores)))

    # --- training curves
    histories = {det: _read_losses(d) for det, (_, d) in first_seed.items()}
    trained = {k: v for k, v in histories.items() if v}
    untrained = [k for k, v in histories.items() if not v]
    body = _img(figures.training_curves_figure(trained), "training curves") if trained else ""
    if untrained:
        body += _note(f"No training epochs (nothing to learn): {', '.join(untrained)}.")
    add(("training", "Training curves (first seed)", body))

    # --- information plane (detectors whose losses.csv has the InfoNCE and entropy bounds)
    plane = information_plane_points(results, runs)
    if plane:
        add(("information-plane", "Information plane (every seed)",
             _note("InfoNCE lower bound on I(X, Z) against the entropy bound R(z), the two terms "
                   "of the information-theoretic objective, at the last epoch (grey: their path "
                   "over the epochs); colour: the run's test AUROC (all anomalies). With the dot "
                   "critic beta trades one against the other; with the cosine critic R only "
                   "shapes a norm the critic never sees.")
             + _img(figures.information_plane_figure(plane), "information plane")))

    # --- representation
    add(("representation", "Learned representation (first seed)",
                     representation(first_seed, data, scores, max_embed)))

    # --- detectability
    add(("detectability", "Detectability: AUROC against substructure signal",
                     detectability_section(runs, data, normal, anomalies)))

    # --- regression
    reg = regression_section(results, bench)
    if reg:
        add(("regression", "Regression of dark-matter properties", reg))

    # --- config
    env = {k: results.get(k) for k in ("date", "machine", "versions", "total_seconds")}
    cfg = {"benchmark": spec, "data": results["data"], "splits": results["splits"],
           "budget": budget,
           "runs": {det: {s: {k: r.get(k) for k in ("config", "train", "epochs_planned",
                                                     "epochs_run", "stopped_by_time",
                                                     "stopped_early", "probe", "diagnostics")}
                          for s, r in entry["seeds"].items()}
                    for det, entry in results["detectors"].items()}}
    add(("config", "Configuration, versions and machine",
                     "<pre>" + html.escape(json.dumps(env, indent=1)) + "</pre>"
                     + "<details><summary>every run's configuration</summary><pre>"
                     + html.escape(json.dumps(cfg, indent=1, default=str)) + "</pre></details>"))

    nav = "".join(f'<a href="#{a}">{html.escape(t.split(" (")[0])}</a>' for a, t, _ in sections)
    source = results["data"].get("preset") or results["data"].get("path")
    title = f"darklens benchmark: {source}"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{CSS}</style>"
        f"<script>{CHECK_SCRIPT}</script></head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1><p class=\"sub\">{html.escape(str(results.get('date')))}"
        f" · {html.escape(str(results.get('machine', {}).get('platform')))} · darklens "
        f"{html.escape(str(results.get('versions', {}).get('darklens')))}</p>"
        f"<nav>{nav}</nav>\n"
        + "".join(_section(a, t, b) for a, t, b in sections)
        + "</body></html>\n"
    )


def write_report(bench_dir: str | os.PathLike, out: str | os.PathLike | None = None,
                 max_embed: int = 600, log: Callable[[str], None] | None = None,
                 cache_mb: float = REPORT_CACHE_MB) -> Path:
    """Write the report (atomically) to ``out`` (default ``bench_dir/report.html``)."""
    path = Path(out) if out is not None else Path(bench_dir) / REPORT
    write_text_atomic(path, build_report(bench_dir, max_embed, log, cache_mb))
    return path
