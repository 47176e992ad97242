"""``benchmark``: every detector on identical data, splits, budget and test set."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from darklens.benchmark import BenchmarkSpec, run_benchmark


def benchmark(detectors: Sequence[str], out: str | os.PathLike[str], *,
              preset: str | None = "demo", data: str | os.PathLike[str] | None = None,
              n_per_class: int = 1000, data_seed: int = 0, seeds: Sequence[int] = (0,),
              epochs: int | None = None, budget_minutes: float | None = None,
              options: Mapping[str, Mapping[str, Any]] | None = None, device: str = "cpu",
              progress: bool = False, verbose: bool = True) -> dict[str, Any]:
    """Run (or resume) ``darklens benchmark`` and return its results.

    Every detector trains on the same normal images of every seed's split, stops early on the
    same validation normals and is scored on the same held-out test images; ``budget_minutes``
    is shared equally by the runs that train (docs/benchmark.md).

    Args:
        detectors: detector names.
        out: the benchmark's folder (data, one run directory per detector and seed,
            results.json); an interrupted benchmark in ``out`` resumes.
        preset: simulate the data from this preset (into ``out/data``) ...
        data: ... or use this data set on disk instead.
        n_per_class: simulated images per class.
        data_seed: the simulation's seed.
        seeds: one split and training seed per entry.
        epochs: a cap on every detector's epochs.
        budget_minutes: training time of all runs together.
        options: per detector, its options (``{"dcae": {"latent_dim": 16}}``).
        device: ``cpu``, ``cuda`` or ``auto``.
        progress: show progress bars.
        verbose: print a line per run.

    Returns:
        The content of ``out/results.json``: per detector and seed the metrics (AUROC, AUPRC,
        TPR at 1% FPR, all and per class), and ``summary`` (mean and std over seeds).

    Examples:
        >>> import darklens as dl
        >>> r = dl.benchmark(["knn", "dcae"], "runs/bench", n_per_class=200)  # doctest: +SKIP
        >>> r["summary"]["dcae"]["auroc"]["all"]["mean"]  # doctest: +SKIP
    """
    spec = BenchmarkSpec(
        detectors=list(detectors), seeds=[int(s) for s in seeds],
        preset=None if data is not None else preset,
        data=None if data is None else os.fspath(data), n_per_class=n_per_class,
        data_seed=data_seed, epochs=epochs, budget_minutes=budget_minutes,
        options={k: dict(v) for k, v in (options or {}).items()}, device=device)
    return run_benchmark(spec, out, log=print if verbose else _quiet, progress=progress)


def _quiet(message: str) -> None:
    """Discard a log line."""
