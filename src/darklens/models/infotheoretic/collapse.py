"""Collapse watch: flag (and warn once) when the representation z shrinks to a point.

A large beta can drive every z to the mode (AUROC 0.5). The spread of z (median over
dimensions of the batch standard deviation) and a running mean of the InfoNCE bound are kept in
buffers, so the watch is saved and resumed with the weights (docs/infotheoretic.md).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import Tensor, nn


class CollapseWarning(UserWarning):
    """The representation z has collapsed to (almost) a point."""


class CollapseWatch(nn.Module):
    """Mixin of the infotheoretic detector: the collapse buffers and the checks on them.

    Reads ``self.config`` (``collapse_ratio``, ``collapse_abs``, ``collapse_mi``, ``beta``).
    """

    config: dict[str, Any]

    def _init_collapse_watch(self) -> None:
        """Register the watch's buffers (saved with the weights)."""
        self.register_buffer("z_std_initial", torch.tensor(float("nan")))
        self.register_buffer("z_std_last", torch.tensor(float("nan")))
        self.register_buffer("z_std_peak", torch.tensor(0.0))
        self.register_buffer("mi_ema", torch.tensor(float("nan")))
        self.register_buffer("steps", torch.tensor(0))
        self.register_buffer("collapsed", torch.tensor(False))
        self._warned = False

    def _watch_collapse(self, z: Tensor, mi: Tensor | None = None, k: int = 0) -> None:
        """Track the spread of z and the InfoNCE bound; flag and warn once on collapse.

        Collapse: the median per-dimension std of z falls below ``collapse_ratio`` x its peak
        or below ``collapse_abs``; or, after 10 steps, the running mean of the InfoNCE bound is
        below ``collapse_mi`` x log K (z does not tell the images of a batch apart) while the
        spread has fallen below half its peak (z is being pulled to the mode). The second
        condition keeps an early network that has not learned anything yet from being flagged.
        """
        if z.shape[0] < 2:
            return
        spread = z.std(dim=0).median()
        if torch.isnan(self.z_std_initial):
            self.z_std_initial.copy_(spread)
        self.z_std_peak.copy_(torch.maximum(self.z_std_peak, spread))
        self.z_std_last.copy_(spread)
        reason = None
        if spread < self.config["collapse_abs"] or spread < (
                self.config["collapse_ratio"] * self.z_std_peak):
            reason = (f"median per-dimension std of z {float(spread):.3g} (first "
                      f"{float(self.z_std_initial):.3g}, peak {float(self.z_std_peak):.3g})")
        if mi is not None and k > 1:
            self.steps += 1
            ema = mi if torch.isnan(self.mi_ema) else 0.9 * self.mi_ema + 0.1 * mi
            self.mi_ema.copy_(ema)
            floor = self.config["collapse_mi"] * math.log(k)
            if int(self.steps) >= 10 and ema < floor and spread < 0.5 * self.z_std_peak:
                reason = (f"InfoNCE bound {float(ema):.3g} nats, under "
                          f"{self.config['collapse_mi']} x log K = "
                          f"{self.config['collapse_mi'] * math.log(k):.3g}")
        if reason is not None:
            self.collapsed.fill_(True)
        if bool(self.collapsed) and not self._warned:
            self._warned = True
            warnings.warn(
                f"infotheoretic: representation collapsed ({reason or 'flagged earlier'}); "
                f"beta={self.config['beta']} is probably too large",
                CollapseWarning, stacklevel=2)

    def _check_bank_collapse(self, z: Tensor) -> None:
        """After training: flag a memory bank whose features ``z`` have no spread left."""
        if z.shape[0] < 2:
            return
        spread = z.std(dim=0).median()
        if spread < self.config["collapse_abs"] or (
                not torch.isnan(self.z_std_initial)
                and spread < self.config["collapse_ratio"] * self.z_std_initial):
            self.collapsed.fill_(True)
            self._watch_collapse(z)

    def collapse_diagnostics(self) -> dict[str, Any]:
        """The watch's state, JSON-able."""
        return {
            "z_std_initial": float(self.z_std_initial),
            "z_std_last": float(self.z_std_last),
            "z_std_peak": float(self.z_std_peak),
            "mi_bound_running": float(self.mi_ema),
            "collapsed": bool(self.collapsed),
        }
