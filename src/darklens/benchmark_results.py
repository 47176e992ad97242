"""What a benchmark records: the environment, test_scores.csv, the summary over seeds.

Split out of ``darklens.benchmark`` (which runs the protocol and re-exports these names) so that
both files stay short; the report reads results through these helpers too.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import sys
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from darklens import __version__
from darklens.errors import DarklensError

TEST_SCORES = "test_scores.csv"
METRICS = ("auroc", "auprc", "tpr_at_fpr_0.01")
VERSION_PACKAGES = ("torch", "numpy", "scikit-learn", "matplotlib", "h5py", "optuna")


def environment() -> dict[str, Any]:
    """Package versions, date and machine, for results.json."""
    versions = {"darklens": __version__, "python": sys.version.split()[0]}
    for pkg in VERSION_PACKAGES:
        try:
            versions[pkg] = importlib_metadata.version(pkg)
        except importlib_metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "versions": versions,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or
                    platform.machine(), "cpu_count": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(),
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available()
                    else None},
    }


# ----------------------------------------------------------------------------- test scores
def scores_csv(idx: np.ndarray, labels: np.ndarray, names: list[str],
                scores: np.ndarray) -> str:
    """test_scores.csv's text: one row per test image (data index, class name, score)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["index", "class", "score"])
    for i, lab, s in zip(idx, labels, scores, strict=True):
        w.writerow([int(i), names[int(lab)], repr(float(s))])
    return buf.getvalue()


def read_test_scores(run_dir: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(data indices, scores) from a run's test_scores.csv."""
    with open(Path(run_dir) / TEST_SCORES) as fh:
        rows = list(csv.DictReader(fh))
    return (np.array([int(r["index"]) for r in rows], dtype=np.int64),
            np.array([float(r["score"]) for r in rows], dtype=np.float64))


# ----------------------------------------------------------------------------- summary
def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per detector: mean, std and n over seeds of every metric and class, and of the timings."""
    out: dict[str, Any] = {}
    for name in dict.fromkeys(r["detector"] for r in records):
        runs = [r for r in records if r["detector"] == name]
        s: dict[str, Any] = {}
        for metric in METRICS:
            s[metric] = {}
            for cls in runs[0]["metrics"][metric]:
                v = np.array([r["metrics"][metric][cls] for r in runs], dtype=np.float64)
                s[metric][cls] = {"mean": float(v.mean()),
                                  "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                                  "n": int(len(v))}
        for key in ("train_seconds", "images_per_second", "epochs_run"):
            v = np.array([r[key] for r in runs if r.get(key) is not None], dtype=np.float64)
            s[key] = {"mean": float(v.mean()) if v.size else None,
                      "std": float(v.std(ddof=1)) if v.size > 1 else 0.0}
        out[name] = s
    return out


def format_mean_std(entry: dict[str, Any] | None, digits: int = 3) -> str:
    """'0.912 +- 0.004' (no +- part for a single seed)."""
    if not entry or entry.get("mean") is None:
        return "-"
    text = f"{entry['mean']:.{digits}f}"
    return text + (f" +- {entry['std']:.{digits}f}" if entry.get("n", 2) > 1 else "")


# ----------------------------------------------------------------------------- regression
def regression_entry(run_dir: str) -> dict[str, Any]:
    """A `darklens regress` run for the report: its metrics.json (it must be evaluated)."""
    path = Path(run_dir) / "metrics.json"
    try:
        metrics = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise DarklensError(f"{path}: missing; run `darklens regress evaluate {run_dir} "
                            "--data DIR` first") from err
    return {"run": str(Path(run_dir).resolve()), "metrics": metrics}
