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
