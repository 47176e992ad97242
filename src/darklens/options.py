"""Options dataclasses built from user dicts (JSON configs, CLI), with unknown keys refused."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

from darklens.errors import DarklensError

T = TypeVar("T")


def dataclass_from_dict(cls: type[T], values: dict[str, Any], what: str) -> T:
    """``cls(**values)``, or a one-line error naming the unknown ``what`` option(s)."""
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - known)
    if unknown:
        raise DarklensError(f"unknown {what} option(s): {', '.join(unknown)}")
    return cls(**values)
