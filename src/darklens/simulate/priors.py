"""Priors: maps from a uniform draw u in (0, 1) to a parameter value (inverse CDF).

Written as data (kind + numbers) so a preset serialises to JSON and can be overridden from the
command line as ``key=uniform:0.5:1`` or ``key=0.3``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Prior:
    """``kind``: fixed, uniform or loguniform, between ``low`` and ``high`` (``low`` if fixed)."""

    kind: str
    low: float
    high: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("fixed", "uniform", "loguniform"):
            raise ValueError(f"unknown prior kind {self.kind!r}")
        if self.kind != "fixed" and (self.high is None or self.high < self.low):
            raise ValueError(f"prior {self.kind} needs low <= high, got {self.low}, {self.high}")
        if self.kind == "loguniform" and self.low <= 0:
            raise ValueError("loguniform prior needs low > 0")

    def sample(self, u: Tensor) -> Tensor:
        """Values for uniforms ``u`` (any shape)."""
        if self.kind == "fixed":
            return torch.full_like(u, self.low)
        if self.kind == "uniform":
            return self.low + (self.high - self.low) * u
        lo, hi = math.log(self.low), math.log(self.high)
        return torch.exp(lo + (hi - lo) * u)

    def to_text(self) -> str:
        return str(self.low) if self.kind == "fixed" else f"{self.kind}:{self.low}:{self.high}"

    @classmethod
    def parse(cls, text: str | float | int) -> Prior:
        """``0.3`` -> fixed; ``uniform:0.5:1``; ``loguniform:1e-24:1e-22``."""
        if isinstance(text, int | float):
            return fixed(float(text))
        parts = str(text).split(":")
        if len(parts) == 1:
            return fixed(float(parts[0]))
        if len(parts) == 3:
            return cls(parts[0], float(parts[1]), float(parts[2]))
        raise ValueError(f"cannot read prior {text!r}: use VALUE or KIND:LOW:HIGH")


def fixed(value: float) -> Prior:
    return Prior("fixed", value)


def uniform(low: float, high: float) -> Prior:
    return Prior("uniform", low, high)


def loguniform(low: float, high: float) -> Prior:
    return Prior("loguniform", low, high)
