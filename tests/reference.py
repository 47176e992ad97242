"""Where the shared DeepLense reference material lies (real images, published 2020 scores).

Looked for in ``$DARKLENS_SHARED``, then in ``shared/`` beside the checkout (as CI lays it out).
"""

from __future__ import annotations

import os
from pathlib import Path

_CANDIDATES = [
    os.environ.get("DARKLENS_SHARED", ""),
    str(Path(__file__).resolve().parents[2] / "shared"),
    "/work/shared",
]


def deeplense_reference() -> Path:
    """The ``deeplense-reference`` folder (may not exist on a machine without shared/)."""
    for base in _CANDIDATES:
        if base and (Path(base) / "deeplense-reference").is_dir():
            return Path(base) / "deeplense-reference"
    return Path(_CANDIDATES[1]) / "deeplense-reference"
