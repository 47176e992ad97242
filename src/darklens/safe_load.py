"""Load weights and checkpoints that may come from strangers: tensors only, never pickled code.

Every loader of a user-supplied ``.pt`` file (detector runs, training checkpoints, regression
runs) goes through ``safe_torch_load``: ``torch.load(..., weights_only=True)`` (an explicit
``True`` cannot be overridden by ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``), and any failure becomes
one ``CheckpointError`` line naming the file and the cause, so the command line prints it
without a traceback.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from darklens.errors import CheckpointError

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")


def load_error_reason(err: BaseException) -> str:
    """A short one-line cause for a failed ``torch.load`` (no ANSI codes, no advice to unpickle)."""
    text = _ANSI.sub("", str(err))
    found = _GLOBAL.search(text)
    if found:
        return (f"it holds a pickled Python object ({found.group(1)}) that could run code; "
                "darklens loads tensors only")
    if "Unsupported operand" in text or "weights_only" in text.lower():
        return "it holds pickled Python objects that could run code; darklens loads tensors only"
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    first = first.split(". ")[0][:160]
    name = type(err).__name__
    return f"corrupt, truncated or not a PyTorch file; {name}: {first}" if first else \
        f"corrupt, truncated or not a PyTorch file; {name}"


def safe_torch_load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load`` restricted to tensors and plain containers; ``CheckpointError`` otherwise."""
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError as err:
        raise CheckpointError(f"{path}: missing") from err
    except Exception as err:  # corrupt, truncated, or holding objects we refuse to unpickle
        raise CheckpointError(f"{path}: cannot be loaded safely "
                              f"({load_error_reason(err)})") from err


def load_state_into(
    module: torch.nn.Module,
    path: str | os.PathLike,
    what: str,
    missing: str = "missing weights file",
    map_location: str | torch.device = "cpu",
) -> torch.nn.Module:
    """Load a state_dict file into ``module`` (tensors only); ``CheckpointError`` naming ``path``.

    ``what`` names the model in the message when the weights do not fit it.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: {missing}")
    state = safe_torch_load(path, map_location)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a state_dict")
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(
            f"{path}: weights do not fit {what} ({str(err).splitlines()[0]})"
        ) from err
    return module.eval()
