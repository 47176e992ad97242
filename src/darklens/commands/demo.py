"""`darklens demo`: the main job end to end on the built-in simulator, within a CPU budget.

Simulates the ``demo`` preset (every class) into ``OUT/data``, writes a picture gallery, then
runs `darklens benchmark` on it: the information-theoretic detector and the baselines, each
with the same share of the training budget, evaluated on the same held-out test images; writes
``OUT/results.json`` and ``OUT/report.html`` and prints where they are and the summary table.
Nothing is downloaded. An interrupted demo rerun with the same options keeps what it finished.

Defaults (1000 images per class, 6 minutes of training over six trained detectors) are sized
for at most 10 minutes on 2 CPU cores in all. ``--quick`` is a smoke run (kNN and the
infotheoretic detector, one epoch); ``--simulate-only`` stops after the gallery.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from darklens.benchmark import BenchmarkSpec, load_or_simulate, run_benchmark
from darklens.data.lensdata import LensData
from darklens.models.base import list_detectors
from darklens.report.gallery import gallery
from darklens.simulate.presets import list_presets

DEMO_DETECTORS = "infotheoretic,knn,deep-svdd,dcae,cvae,aae,rbm"
QUICK_DETECTORS = "infotheoretic,knn"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="simulate, train the detectors within a CPU budget, "
                       "write the report")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--preset", default="demo", choices=list_presets())
    p.add_argument("--n-per-class", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0, help="seed of the simulated data")
    p.add_argument("--seeds", type=int, default=1, help="training seeds (splits and weights)")
    p.add_argument("--detectors", help=f"comma-separated (default {DEMO_DETECTORS}; from "
                   f"{', '.join(list_detectors())})")
    p.add_argument("--budget-minutes", type=float, default=6.0,
                   help="training time of all detectors together (default 6)")
    p.add_argument("--epochs", type=int, help="cap on every detector's epochs")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: {QUICK_DETECTORS}, one epoch")
    p.add_argument("--simulate-only", action="store_true", help="stop after the gallery")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def _data_summary(data: LensData) -> None:
    m = data.metadata
    print(f"{'class':<8} {'n':>5} {'median S/N':>11} {'median chi2':>12} {'median f_sub':>13}")
    for i, name in enumerate(data.class_names):
        sel = data.labels == i
        if not sel.any():
            continue
        cols = [np.nanmedian(m[k][sel]) if k in m and np.isfinite(m[k][sel]).any() else np.nan
                for k in ("snr", "substructure_chi2", "f_sub")]
        print(f"{name:<8} {int(sel.sum()):>5} {cols[0]:>11.1f} {cols[1]:>12.1f} {cols[2]:>13.4f}")


def run(args: argparse.Namespace) -> int:
    from darklens.commands.benchmark import finish

    t0 = time.perf_counter()
    out = Path(args.out)
    detectors = args.detectors or (QUICK_DETECTORS if args.quick else DEMO_DETECTORS)
    spec = BenchmarkSpec(
        detectors=[d.strip() for d in detectors.split(",") if d.strip()],
        seeds=list(range(max(1, args.seeds))), preset=args.preset,
        n_per_class=args.n_per_class, data_seed=args.seed,
        epochs=1 if args.quick else args.epochs,
        budget_minutes=None if args.quick else args.budget_minutes)
    spec.check()
    log = lambda m: print(m, flush=True)  # noqa: E731
    data, info = load_or_simulate(spec, out, log, progress=not args.no_progress)
    path = gallery(data, out / "gallery.png", 6, title=f"darklens: {args.preset} preset")
    print(f"\n{len(data)} images ({data.images.shape[-1]}x{data.images.shape[-1]}) in "
          f"{out / 'data'}, {time.perf_counter() - t0:.0f} s; gallery: {path}")
    _data_summary(data)
    if args.simulate_only:
        return 0
    print(flush=True)
    results = run_benchmark(spec, out, log=log, progress=not args.no_progress,
                            loaded=(data, info))
    finish(results, out)
    print(f"demo finished in {time.perf_counter() - t0:.0f} s (wall clock)")
    return 0
