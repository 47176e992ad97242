"""`darklens benchmark`: detectors compared on identical data, splits, budget and test set.

Writes ``OUT/results.json`` and ``OUT/report.html`` and prints the summary table; see
``darklens.benchmark`` for the protocol and the resumable layout of ``OUT``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from darklens.benchmark import BenchmarkSpec, run_benchmark
from darklens.data.shards import DEFAULT_CACHE_MB
from darklens.errors import DarklensError
from darklens.models.base import list_detectors
from darklens.simulate.presets import list_presets


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("benchmark", help="compare detectors on identical data and budget; "
                       "write results.json and report.html")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--preset", choices=list_presets(), help="simulate this preset (default "
                     "demo)")
    src.add_argument("--data", help="use this data set instead of simulating")
    p.add_argument("--detectors", default="infotheoretic,knn,dcae",
                   help=f"comma-separated, from: {', '.join(list_detectors())}")
    p.add_argument("--seeds", type=int, default=1, help="number of seeds (0, 1, ...)")
    p.add_argument("--out", required=True, help="benchmark directory")
    p.add_argument("--budget-minutes", type=float,
                   help="training time of all runs together, divided equally over them")
    p.add_argument("--n-per-class", type=int, default=1000, help="images simulated per class")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the simulated data")
    p.add_argument("--epochs", type=int, help="cap on every detector's epochs")
    p.add_argument("--config", help="JSON object (or .json file) of per-detector options, "
                   "{\"NAME\": {...}} in the format of `darklens train --config`, or a "
                   "file path as the value")
    p.add_argument("--normal", default="no_sub")
    p.add_argument("--device", default="cpu")
    p.add_argument("--regression-run", action="append", default=[], metavar="RUN",
                   help="an evaluated `darklens regress` run to show in the report")
    p.add_argument("--shard-cache-mb", type=float, default=DEFAULT_CACHE_MB,
                   help="HDF5 shards are read on demand through a cache of this many MiB "
                   "(as `darklens train`); the test images are scored a batch at a time, and "
                   "the report reads only the images it shows")
    p.add_argument("--no-report", action="store_true", help="write results.json only")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def parse_options(text: str | None) -> dict[str, Any]:
    """``--config``: {detector: options object or path of a JSON file}."""
    if not text:
        return {}
    path = Path(text)
    try:
        raw = json.loads(path.read_text() if path.suffix == ".json" and path.is_file() else text)
    except json.JSONDecodeError as err:
        raise DarklensError(f"--config: not valid JSON ({err})") from err
    if not isinstance(raw, dict) or not all(isinstance(v, (dict, str)) for v in raw.values()):
        raise DarklensError("--config must be a JSON object {detector: {options} or file}")
    out = {}
    for name, value in raw.items():
        if isinstance(value, str):
            try:
                value = json.loads(Path(value).read_text())
            except (OSError, json.JSONDecodeError) as err:
                raise DarklensError(f"--config: {name}: cannot read {value} ({err})") from err
        out[name] = value
    return out


def spec_from_args(args: argparse.Namespace) -> BenchmarkSpec:
    if args.seeds < 1:
        raise DarklensError("--seeds must be at least 1")
    if args.n_per_class < 1:
        raise DarklensError("--n-per-class must be at least 1")
    return BenchmarkSpec(
        detectors=[d.strip() for d in args.detectors.split(",") if d.strip()],
        seeds=list(range(args.seeds)), preset=None if args.data else (args.preset or "demo"),
        data=args.data, n_per_class=args.n_per_class, data_seed=args.data_seed,
        epochs=args.epochs, budget_minutes=args.budget_minutes,
        options=parse_options(args.config), normal=args.normal, device=args.device)


def print_summary(results: dict[str, Any]) -> None:
    """The summary table (mean +- std over seeds) with rich."""
    from rich.console import Console
    from rich.table import Table

    from darklens.report.html import summary_rows

    header, rows = summary_rows(results)
    n = len(results["benchmark"]["seeds"])
    table = Table(title=f"darklens benchmark ({n} seed{'s' if n > 1 else ''}; mean +- std)")
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    Console(width=max(120, 14 * len(header))).print(table)


def finish(results: dict[str, Any], out: Path, report: bool = True,
           cache_mb: float | None = None) -> Path | None:
    """Write the report (with progress lines) and print the table; return the report path.
    ``cache_mb``: the shard cache the report may use at most (``--shard-cache-mb``)."""
    path = None
    if report:
        from darklens.report.html import REPORT_CACHE_MB, write_report

        print("writing the report ...", flush=True)
        cache = REPORT_CACHE_MB if cache_mb is None else min(cache_mb, REPORT_CACHE_MB)
        path = write_report(out, log=lambda m: print(m, flush=True), cache_mb=cache)
    print_summary(results)
    print(f"results: {out / 'results.json'}")
    if path is not None:
        print(f"report:  {path}")
    return path


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    results = run_benchmark(spec_from_args(args), out,
                            log=lambda m: print(m, flush=True), progress=not args.no_progress,
                            regression_runs=args.regression_run, cache_mb=args.shard_cache_mb)
    finish(results, out, report=not args.no_report, cache_mb=args.shard_cache_mb)
    return 0
