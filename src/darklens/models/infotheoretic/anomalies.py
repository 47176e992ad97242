"""Anomalies the infotheoretic detector is given: labelled ones (the semi-supervised term) and
pseudo-anomalies (the label-free choice of score), and the labelled subset picked from data.

Both are kept in non-persistent buffers: they are training inputs, not part of the model.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from darklens.data.lensdata import LensData
from darklens.errors import DataError


class AnomalyInputs(nn.Module):
    """Mixin of the infotheoretic detector: the ``labelled`` and ``pseudo`` image buffers.

    Reads ``config["eta"]`` and ``config["anomaly_batch"]``; draws from ``self._gen``.
    """

    accepts_labelled_anomalies: ClassVar[bool] = True
    accepts_pseudo_anomalies: ClassVar[bool] = True
    config: dict[str, Any]
    _gen: torch.Generator

    def _init_anomaly_inputs(self) -> None:
        """Register the two (empty, non-persistent) image buffers."""
        self.register_buffer("labelled", torch.zeros(0), persistent=False)
        self.register_buffer("pseudo", torch.zeros(0), persistent=False)

    def set_labelled_anomalies(self, images: Tensor | None) -> None:
        """Labelled anomalous images (N, C, H, W) for the semi-supervised term (None: clear)."""
        self.labelled = self._image_buffer(images, "labelled anomalies")

    def set_pseudo_anomalies(self, images: Tensor | None) -> None:
        """Pseudo-anomalies (N, C, H, W) for the label-free choice of score (None: clear).

        E.g. validation normals re-rendered with random perturbers
        (``darklens.simulate.pseudo.perturbed_normals``); without them the choice uses local
        patch swaps of the validation images.
        """
        self.pseudo = self._image_buffer(images, "pseudo-anomalies")

    def _image_buffer(self, images: Tensor | None, what: str) -> Tensor:
        """``images`` (N, C, H, W) as float32 on the model's device; empty for None."""
        device = self.labelled.device
        if images is None or images.numel() == 0:
            return torch.zeros(0, device=device)
        if images.dim() != 4:
            raise ValueError(f"{what} must be (N, C, H, W), got {tuple(images.shape)}")
        return images.detach().to(device, torch.float32)

    def _sample_anomalies(self, batch_anomalies: Tensor | None) -> Tensor | None:
        """The batch's own anomalies, else up to ``anomaly_batch`` labelled ones (or None)."""
        if batch_anomalies is not None:
            return batch_anomalies
        n = self.labelled.shape[0] if self.labelled.dim() == 4 else 0
        if n == 0 or self.config["eta"] <= 0:
            return None
        m = min(n, int(self.config["anomaly_batch"]))
        idx = torch.randperm(n, generator=self._gen)[:m].to(self.labelled.device)
        return self.labelled[idx]


def select_labelled(data: LensData, n_per_class: int, seed: int = 0,
                    normal: str = "no_sub") -> Tensor:
    """Up to ``n_per_class`` images of every anomaly class in ``data`` (fixed-seed subset).

    For ``darklens train --detector infotheoretic --labelled-anomalies DIR --n-labelled N``:
    the result goes to ``InfoTheoretic.set_labelled_anomalies``.
    """
    if n_per_class < 1:
        raise DataError(f"--n-labelled must be at least 1, got {n_per_class}")
    gen = np.random.default_rng(seed)
    picks = []
    for cid, name in enumerate(data.class_names):
        idx = np.flatnonzero(data.labels == cid)
        if name == normal or idx.size == 0:
            continue
        picks.append(gen.permutation(idx)[:n_per_class])
    if not picks:
        raise DataError(f"no labelled anomalies (classes other than {normal!r}) in the data")
    return torch.as_tensor(data.images[np.sort(np.concatenate(picks))], dtype=torch.float32)
