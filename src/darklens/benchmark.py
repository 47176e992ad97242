"""`darklens benchmark`: every detector on identical data, splits, budget and test set.

Protocol. One data set (simulated from a preset into ``OUT/data``, or ``--data``). For every
seed s, the split of ``darklens train`` with seed s (normal images cut into train / validation /
test; anomalies never trained on, shared between validation and test): every detector of seed s
trains on the same normal training images, stops early on the same normal validation images and
is scored on the same test images. A time budget (``budget_minutes``) is divided equally over
the runs that train (kNN trains nothing); each run first times a few training steps on a
throw-away copy of its detector, plans the number of epochs that fits its share (so that
learning-rate schedules end where they should), and the training loop stops anyway when the
share is used (``TrainConfig.max_minutes``).

Layout of ``OUT``::

    OUT/data/                          simulated HDF5 shards (unless --data)
    OUT/runs/<detector>-seed<s>/       a `darklens train` run directory (config.json,
                                       weights.pt, losses.csv, normal_stats.json) plus
                                       test_scores.csv and result.json
    OUT/results.json                   every run and the summary (mean and std over seeds)

Memory. HDF5 shards (the simulated data, or ``--data`` holding shards) are opened as
``darklens train`` opens them (``darklens.data.shards.ShardDataset``: labels up front, images
read on demand through a cache of ``cache_mb`` MiB), and the test images are read and scored
``SCORE_BATCH`` at a time, so memory does not grow with the data beyond the cache; other
formats are loaded whole, as ``darklens train`` loads them.

Interrupted benchmarks resume: a run whose ``result.json`` holds the same key (detector,
options, data fingerprint, split, epochs cap, budget) is not trained again; a run cut short
continues from its checkpoint with the epochs it had planned.

What the benchmark records (the environment block, test_scores.csv, the summary over seeds,
regression entries) lives in ``darklens.benchmark_results``; those names are re-exported here.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Subset

from darklens.benchmark_results import (
    METRICS,
    TEST_SCORES,
    VERSION_PACKAGES,
    environment,
    format_mean_std,
    read_test_scores,
    regression_entry,
    scores_csv,
    summarise,
)
from darklens.data.fingerprint import fingerprint
from darklens.data.formats import load_dataset
from darklens.data.lensdata import LensData
from darklens.data.shards import DEFAULT_CACHE_MB, ShardDataset, is_shard_path
from darklens.errors import DarklensError
from darklens.evaluate.metrics import anomaly_metrics
from darklens.io import write_json_atomic, write_text_atomic
from darklens.models.base import Detector, create_detector, list_detectors
from darklens.models.scoring import score_images
from darklens.progress import progress_bar
from darklens.train.config import parse_config
from darklens.train.data import detection_data
from darklens.train.loop import CHECKPOINT, TrainConfig, fit
from darklens.train.run import train_run

SCORE_BATCH = 256  # test images read and scored at a time
RESULTS = "results.json"
RUN_RESULT = "result.json"
PLAN = "plan.json"

__all__ = [
    "METRICS",
    "PLAN",
    "RESULTS",
    "RUN_RESULT",
    "TEST_SCORES",
    "VERSION_PACKAGES",
    "BenchmarkSpec",
    "data_path",
    "environment",
    "format_mean_std",
    "load_or_simulate",
    "plan_epochs",
    "read_test_scores",
    "regression_entry",
    "run_benchmark",
    "run_one",
    "scores_csv",
    "split_options",
    "summarise",
]


@dataclass
class BenchmarkSpec:
    """Everything that decides a benchmark (recorded in results.json)."""

    detectors: list[str]
    seeds: list[int] = field(default_factory=lambda: [0])
    preset: str | None = "demo"
    data: str | None = None  # an existing data set instead of simulating
    n_per_class: int = 1000
    data_seed: int = 0
    epochs: int | None = None  # cap on every detector's epochs (default: its own)
    budget_minutes: float | None = None  # training time of all runs together
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # per detector: --config
    normal: str = "no_sub"
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    normalise: str = "minmax"
    device: str = "cpu"

    def check(self) -> None:
        known = list_detectors()
        unknown = [d for d in self.detectors if d not in known]
        if unknown:
            raise DarklensError(f"unknown detector(s) {', '.join(unknown)}; known: "
                                f"{', '.join(known)}")
        if not self.detectors:
            raise DarklensError("no detectors given")
        if len(set(self.detectors)) != len(self.detectors):
            raise DarklensError("a detector is listed twice")
        if not self.seeds:
            raise DarklensError("--seeds must be at least 1")
        if self.budget_minutes is not None and self.budget_minutes <= 0:
            raise DarklensError("--budget-minutes must be positive")
        if self.data is None and self.preset is None:
            raise DarklensError("give --preset or --data")


# ----------------------------------------------------------------------------- data
def _open(path: str | os.PathLike, cache_mb: float | None) -> LensData | ShardDataset:
    """The data at ``path``: loaded, or (given ``cache_mb``, for HDF5 shards) streamed."""
    if cache_mb is not None and is_shard_path(path):
        return ShardDataset.from_path(path, cache_mb)
    return load_dataset(path)


def load_or_simulate(spec: BenchmarkSpec, out: Path,
                     log: Callable[[str], None] = print,
                     progress: bool = True, cache_mb: float | None = None
                     ) -> tuple[LensData | ShardDataset, dict[str, Any]]:
    """The benchmark's data set and a description of it (path relative to ``out`` if inside).

    ``cache_mb``: open HDF5 shards as a ``ShardDataset`` with a cache of that many MiB
    instead of loading them (a ``LensData``, with metadata, when None)."""
    if spec.data is not None:
        data = _open(spec.data, cache_mb)
        return data, {"path": str(Path(spec.data).resolve()), "source": "given"}
    from darklens.simulate.presets import get_preset
    from darklens.simulate.writer import simulate_to_disk

    preset = get_preset(spec.preset)
    where = out / "data"
    manifest = where / "simulation.json"
    if manifest.exists():
        old = json.loads(manifest.read_text())
        if (old.get("preset", {}).get("name"), old.get("seed"), old.get("n_per_class")) != (
                preset.name, spec.data_seed, spec.n_per_class):
            raise DarklensError(f"{where} holds another simulation (preset "
                                f"{old.get('preset', {}).get('name')}, seed {old.get('seed')}, "
                                f"{old.get('n_per_class')} per class); use another --out")
    log(f"simulating {spec.n_per_class} images per class of preset {preset.name} "
        f"(seed {spec.data_seed}) into {where}")
    t0 = time.perf_counter()
    with progress_bar(total=3 * spec.n_per_class, desc=f"simulate {preset.name}", unit="img",
                      disable=not progress) as bar:
        simulate_to_disk(preset, where, spec.n_per_class, spec.data_seed, chunk_size=500,
                         progress=bar.update)
    data = _open(where, cache_mb)
    return data, {"path": "data", "source": "simulated", "preset": preset.name,
                  "seed": spec.data_seed, "n_per_class": spec.n_per_class,
                  "seconds": time.perf_counter() - t0}


def data_path(results: dict[str, Any], out: str | os.PathLike) -> Path:
    """Where the benchmark's data set is (a relative path is relative to the benchmark dir)."""
    p = Path(results["data"]["path"])
    return p if p.is_absolute() else Path(out) / p


# ----------------------------------------------------------------------------- one run
def split_options(spec: BenchmarkSpec, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(detector options, training options) for ``name`` from ``spec.options``."""
    raw = spec.options.get(name)
    if raw is None:
        return {}, {}
    return parse_config(raw if isinstance(raw, str) else json.dumps(raw))


def plan_epochs(name: str, det_config: dict[str, Any], train_set: Any, n_val: int,
                values: dict[str, Any], budget_s: float) -> tuple[int, dict[str, float]]:
    """Epochs that fit ``budget_s``, from timing training steps on a throw-away detector."""
    max_epochs = int(values.get("epochs", 50))
    bs = int(values.get("batch_size", 100))
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        probe = create_detector(name, **det_config)
    if not probe.optimizer_groups():
        return max_epochs, {"probe_seconds": 0.0}
    probe.fit_end = lambda *a, **k: None  # memory banks etc. of a throw-away model: skip
    n = min(len(train_set), 3 * bs)
    cfg = TrainConfig.from_dict({**values, "epochs": 2, "out_dir": None, "resume": False,
                                 "progress": False, "max_minutes": None, "patience": None})
    result = fit(probe, Subset(train_set, range(n)), None, cfg)
    steps = max(1, n // bs) if n > bs else 1
    # the faster of two epochs: a passing load on a shared machine should not halve the plan
    step_s = min(row["seconds"] for row in result.history) / steps
    full_steps = max(1, len(train_set) // bs) if len(train_set) > bs else 1
    epoch_s = step_s * (full_steps + math.ceil(n_val / bs) / 3)
    probe_s = time.perf_counter() - t0
    overhead = step_s * full_steps / 3  # memory banks, centres: about a forward pass
    # 10% headroom: on a shared machine an epoch can take longer than the probe's
    epochs = int(0.9 * (budget_s - probe_s - overhead) // max(epoch_s, 1e-9))
    return max(1, min(max_epochs, epochs)), {"probe_seconds": probe_s, "step_seconds": step_s,
                                             "epoch_seconds_estimate": epoch_s}


def score_test(detector: Detector, data: LensData | ShardDataset, test: np.ndarray,
               normaliser: Any, device: str = "cpu", progress: bool = True) -> np.ndarray:
    """Scores (N,) of the images ``test`` of ``data``, read, normalised and scored
    ``SCORE_BATCH`` at a time (the batches ``score_images`` would cut from all of them)."""
    parts = []
    with progress_bar(total=len(test), desc="scoring test images", unit="images",
                      disable=not progress) as bar:
        for lo in range(0, len(test), SCORE_BATCH):
            idx = test[lo:lo + SCORE_BATCH]
            parts.append(score_images(detector, normaliser(data.images[idx]), SCORE_BATCH,
                                      device))
            bar.update(len(idx))
    return np.concatenate(parts) if parts else np.zeros(0)


def run_one(spec: BenchmarkSpec, name: str, seed: int, data: LensData | ShardDataset,
            data_info: dict,
            run_dir: Path, budget_s: float | None, progress: bool = True) -> dict[str, Any]:
    """Train, score and evaluate one detector on one seed's split; returns its record."""
    det_opts, train_opts = split_options(spec, name)
    fp = fingerprint(data)
    key = {"detector": name, "seed": seed, "options": [det_opts, train_opts],
           "data_fingerprint": fp, "normal": spec.normal, "val_fraction": spec.val_fraction,
           "test_fraction": spec.test_fraction, "normalise": spec.normalise,
           "epochs_cap": spec.epochs,
           "budget_seconds": None if budget_s is None else round(budget_s, 3)}
    done = run_dir / RUN_RESULT
    if done.exists():
        try:
            old = json.loads(done.read_text())
        except json.JSONDecodeError:
            old = {}
        if old.get("key") == key:
            old["skipped"] = True
            return old
    det_data = detection_data(data, spec.normal, seed, spec.val_fraction, spec.test_fraction,
                              spec.normalise)
    plan_file = run_dir / PLAN
    probe: dict[str, float] = {}

    def prepare(detector: Detector, values: dict[str, Any]) -> None:
        """Cap the epochs, then take the plan of a run cut short, or plan afresh."""
        nonlocal probe
        if spec.epochs is not None:
            values["epochs"] = min(int(values.get("epochs", spec.epochs)), spec.epochs)
        resume = False
        if plan_file.exists() and (run_dir / CHECKPOINT).exists():
            plan = json.loads(plan_file.read_text())
            if plan.get("key") == key:
                values["epochs"], probe, resume = plan["epochs"], plan.get("probe", {}), True
        if not resume:
            if run_dir.exists():
                shutil.rmtree(run_dir)  # a run of another configuration: start afresh
            run_dir.mkdir(parents=True)
            if budget_s is not None:
                values["epochs"], probe = plan_epochs(name, detector.config, det_data.train,
                                                      len(det_data.val), values, budget_s)
            write_json_atomic(plan_file, {"key": key, "epochs": values.get("epochs"),
                                          "probe": probe})
        if budget_s is not None:
            values["max_minutes"] = max(budget_s - probe.get("probe_seconds", 0.0), 1.0) / 60
        values["resume"] = resume

    normaliser = det_data.normaliser
    test = det_data.split.test
    extra: dict[str, Any] = {
        "normal": spec.normal, "seed": seed, "normaliser": normaliser.to_dict(),
        "data": {"path": data_info["path"], "n": len(data), "fingerprint": fp,
                 "class_names": list(data.class_names)},
        "split": {"seed": seed, "val_fraction": spec.val_fraction,
                  "test_fraction": spec.test_fraction, "n_train": len(det_data.split.train),
                  "n_val_normal": len(det_data.val), "n_test": len(test)},
    }
    t0 = time.perf_counter()
    run = train_run(name, det_opts, train_opts, det_data.train, det_data.val,
                    image_size=int(data.images.shape[-1]), in_channels=int(data.images.shape[1]),
                    seed=seed, overrides={"device": spec.device, "out_dir": str(run_dir),
                                          "progress": progress},
                    prepare=prepare, extra=extra)
    train_s = time.perf_counter() - t0
    detector, cfg, result = run.detector, run.config, run.result

    t1 = time.perf_counter()
    scores = score_test(detector, data, test, normaliser, spec.device, progress)
    score_s = time.perf_counter() - t1
    metrics = anomaly_metrics(scores, data.labels[test], data.class_names, spec.normal)
    diagnostics = detector.diagnostics()
    write_text_atomic(run_dir / TEST_SCORES,
                      scores_csv(test, data.labels[test], list(data.class_names), scores))
    record = {
        "detector": name, "seed": seed, "key": key,
        "run_dir": str(run_dir.name),
        "metrics": metrics,
        "train_seconds": result.seconds, "wall_seconds": train_s, "score_seconds": score_s,
        "budget_seconds": budget_s, "probe": probe,
        "images_per_second": (len(det_data.train) * result.epochs_run / result.seconds
                              if result.seconds > 0 and result.epochs_run else None),
        "epochs_planned": cfg.epochs, "epochs_run": result.epochs_run,
        "stopped_by_time": result.stopped_by_time, "stopped_early": result.stopped_early,
        "best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss,
        "n_train": len(det_data.split.train), "n_val_normal": len(det_data.val),
        "n_test": {k: int(v) for k, v in metrics["n"].items()},
        "config": detector.config, "train": asdict(cfg),
        "diagnostics": diagnostics,
    }
    write_json_atomic(done, record)
    (run_dir / CHECKPOINT).unlink(missing_ok=True)  # the weights are saved; free the disk
    record["skipped"] = False
    return record


# ----------------------------------------------------------------------------- benchmark
def run_benchmark(spec: BenchmarkSpec, out: str | os.PathLike,
                  log: Callable[[str], None] = print, progress: bool = True,
                  regression_runs: list[str] | None = None,
                  loaded: tuple[LensData | ShardDataset, dict[str, Any]] | None = None,
                  cache_mb: float = DEFAULT_CACHE_MB) -> dict[str, Any]:
    """Run (or resume) the benchmark in ``out``; write and return results.json's content.

    ``loaded``: the result of ``load_or_simulate(spec, out)`` when the caller has it already;
    otherwise HDF5 shards are streamed through a cache of ``cache_mb`` MiB.
    """
    spec.check()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    data, data_info = loaded or load_or_simulate(spec, out, log, progress, cache_mb)
    for c in (spec.normal,):
        if c not in data.class_names:
            raise DarklensError(f"normal class {c!r} not in the data ({data.class_names})")
    size = int(data.images.shape[-1])
    trains = [d for d in spec.detectors
              if create_detector(d, image_size=size,
                                 in_channels=int(data.images.shape[1]),
                                 **split_options(spec, d)[0]).optimizer_groups()]
    n_budgeted = len(trains) * len(spec.seeds)
    per_run = (60.0 * spec.budget_minutes / n_budgeted
               if spec.budget_minutes is not None and n_budgeted else None)
    if per_run is not None:
        log(f"budget: {spec.budget_minutes:g} min over {n_budgeted} training runs = "
            f"{per_run:.0f} s each")
    records: list[dict[str, Any]] = []
    total = len(spec.detectors) * len(spec.seeds)
    for seed in spec.seeds:  # all detectors of a seed first: an interruption leaves comparisons
        for name in spec.detectors:
            k = len(records) + 1
            run_dir = out / "runs" / f"{name}-seed{seed}"
            budget = per_run if name in trains else None
            log(f"[{k}/{total}] {name}, seed {seed}" +
                (f", budget {budget:.0f} s" if budget is not None else ""))
            rec = run_one(spec, name, seed, data, data_info, run_dir, budget, progress)
            a = rec["metrics"]["auroc"]
            log(f"[{k}/{total}] {name}, seed {seed}: "
                + ("finished earlier, kept; " if rec.get("skipped") else "")
                + f"AUROC all {a['all']:.3f}, "
                + ", ".join(f"{c} {v:.3f}" for c, v in a.items() if c != "all")
                + f"; {rec['epochs_run']} epoch(s), {rec['train_seconds']:.0f} s training")
            records.append(rec)
    results: dict[str, Any] = {
        "benchmark": asdict(spec),
        "data": {**data_info, "n": len(data), "image_size": size,
                 "class_names": list(data.class_names), "fingerprint": fingerprint(data),
                 "n_per_class": {c: int((data.labels == i).sum())
                                 for i, c in enumerate(data.class_names)}},
        "splits": {str(seed): {"seed": seed, "normal": spec.normal,
                               "val_fraction": spec.val_fraction,
                               "test_fraction": spec.test_fraction}
                   for seed in spec.seeds},
        "budget": {"minutes": spec.budget_minutes, "seconds_per_run": per_run,
                   "runs_with_training": n_budgeted},
        "detectors": {name: {"seeds": {str(r["seed"]): r for r in records
                                       if r["detector"] == name}}
                      for name in spec.detectors},
        "summary": summarise(records),
        **environment(),
        "total_seconds": time.perf_counter() - t_start,
    }
    if regression_runs:
        results["regression"] = [regression_entry(r) for r in regression_runs]
    write_json_atomic(out / RESULTS, results)
    return results
