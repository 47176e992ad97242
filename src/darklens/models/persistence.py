"""A run directory: the detector's config, its weights and the statistics of its normal scores.

Layout written by ``save_run``::

    RUN/config.json         {"detector": name, "config": {...}, ...extra (training, data)}
    RUN/weights.pt          the state_dict (tensors only; read with weights_only=True)
    RUN/normal_stats.json   mean, std and quantiles of scores on normal validation images
    RUN/calibration.json    scores of held-out calibration normals (never trained or validated
                            on): what ``darklens score`` turns into conformal p-values

``load_run`` rebuilds the detector by name from ``config.json`` and loads the weights without
unpickling arbitrary objects; anything missing, corrupt or untrusted raises ``CheckpointError``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from darklens import __version__
from darklens.errors import CheckpointError
from darklens.io import atomic_path, read_json_object, write_json_atomic
from darklens.models.base import Detector, create_detector, list_detectors
from darklens.safe_load import load_state_into

CONFIG = "config.json"
WEIGHTS = "weights.pt"
NORMAL_STATS = "normal_stats.json"
CALIBRATION = "calibration.json"
QUANTILES = (0.5, 0.9, 0.95, 0.99, 0.999)


def normal_stats(scores: np.ndarray) -> dict[str, Any]:
    """Mean, std and quantiles of anomaly scores of normal images (e.g. to set a threshold)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        return {"n": 0}
    return {
        "n": int(s.size),
        "mean": float(s.mean()),
        "std": float(s.std()),
        "quantiles": {str(q): float(np.quantile(s, q)) for q in QUANTILES},
    }


def save_run(run_dir: str | os.PathLike, detector: Detector,
             normal_scores: np.ndarray | None = None,
             extra: dict[str, Any] | None = None) -> Path:
    """Write config, weights (atomically) and, if given, normal-score statistics to ``run_dir``."""
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    with atomic_path(run / WEIGHTS) as tmp:
        torch.save({k: v.detach().cpu() for k, v in detector.state_dict().items()}, tmp)
    if normal_scores is not None:
        write_json_atomic(run / NORMAL_STATS, normal_stats(normal_scores))
    config = {"detector": detector.name, "config": detector.config,
              "darklens_version": __version__, **(extra or {})}
    write_json_atomic(run / CONFIG, config)
    return run


def read_run_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``config.json`` of a run, checked for the keys ``load_run`` needs."""
    path = Path(run_dir) / CONFIG
    if not Path(run_dir).is_dir():
        raise CheckpointError(f"{run_dir}: no such run directory")
    config = read_json_object(path, "detector and its config",
                              f"is {run_dir} a finished training run?")
    if not isinstance(config.get("detector"), str) or not isinstance(config.get("config"), dict):
        raise CheckpointError(f"{path}: needs a 'detector' name and a 'config' object")
    return config


def load_run(run_dir: str | os.PathLike, map_location: str | torch.device = "cpu") -> Detector:
    """Rebuild the detector saved in ``run_dir`` (eval mode)."""
    config = read_run_config(run_dir)
    name = config["detector"]
    if name not in list_detectors():
        raise CheckpointError(f"{Path(run_dir) / CONFIG}: unknown detector {name!r} "
                              f"(known: {', '.join(list_detectors())})")
    try:
        detector = create_detector(name, **config["config"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{Path(run_dir) / CONFIG}: bad config for {name} ({err})") from err
    return load_state_into(detector, Path(run_dir) / WEIGHTS, f"detector {name}",
                           map_location=map_location)


def save_calibration(run_dir: str | os.PathLike, scores: np.ndarray,
                     record: dict[str, Any] | None = None) -> Path:
    """Write the held-out normals' scores (finite ones; NaN = not scored) to calibration.json."""
    s = np.asarray(scores, dtype=np.float64)
    ok = np.isfinite(s)
    body = {"n": int(ok.sum()), "n_not_scored": int((~ok).sum()),
            "scores": [float(v) for v in s[ok]], **(record or {})}
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    path = Path(run_dir) / CALIBRATION
    write_json_atomic(path, body)
    return path


def read_calibration(run_dir: str | os.PathLike) -> np.ndarray | None:
    """The calibration scores of a run (float64), or None for a run saved without them."""
    path = Path(run_dir) / CALIBRATION
    if not path.exists():
        return None
    body = read_json_object(path, "calibration scores", "retrain the run to recreate it")
    scores = body.get("scores")
    if not isinstance(scores, list) or not all(isinstance(v, (int, float)) for v in scores):
        raise CheckpointError(f"{path}: 'scores' must be a list of numbers")
    out = np.asarray(scores, dtype=np.float64)
    if not np.isfinite(out).all():
        raise CheckpointError(f"{path}: non-finite calibration scores")
    return out
