"""The ``--config`` of ``darklens train`` and ``darklens sweep`` (and a benchmark's options):
one JSON object, or a ``.json`` file holding it, split into detector and training options.

Options may be nested (``{"detector": {...}, "train": {...}}``) or flat: a flat key is a
training option when ``TrainConfig`` has a field of that name (``TRAIN_KEYS``), else a detector
option.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

from darklens.errors import DarklensError
from darklens.train.loop import TrainConfig

#: The training options (``TrainConfig`` fields); any other option is the detector's.
TRAIN_KEYS = {f.name for f in fields(TrainConfig)}


def parse_config(text: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``--config`` -> (detector options, training options)."""
    if not text:
        return {}, {}
    path = Path(text)
    try:
        raw = json.loads(path.read_text() if path.suffix == ".json" and path.is_file() else text)
    except json.JSONDecodeError as err:
        raise DarklensError(f"--config: not valid JSON ({err})") from err
    if not isinstance(raw, dict):
        raise DarklensError("--config must be a JSON object")
    det = dict(raw.pop("detector", {}) or {})
    train = dict(raw.pop("train", {}) or {})
    for key, value in raw.items():  # flat keys: training option if TrainConfig knows it
        (train if key in TRAIN_KEYS else det)[key] = value
    return det, train
