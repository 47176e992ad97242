"""The Detector contract and the registry of detectors by name.

A detector is a plain ``nn.Module`` that knows its training loss for a batch and its anomaly
score (higher = more anomalous). One file per detector, registered with ``@register_detector``;
``create_detector(name, **config)`` rebuilds it from its saved config.
"""

from __future__ import annotations

import importlib
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

_REGISTRY: dict[str, type[Detector]] = {}

# Modules that define detectors; importing them fills the registry. A new detector is one file
# plus one line here.
DETECTOR_MODULES: tuple[str, ...] = ()


class Detector(nn.Module):
    """An anomaly detector trained on normal images only.

    Subclasses set ``name``, keep their constructor arguments in ``self.config`` (JSON-able),
    and implement ``training_loss`` and ``score``. Optional hooks: ``fit_start(loader)`` (e.g.
    Deep SVDD's centre, kNN's memory bank), ``optimizer_groups()``, and ``training_step`` for
    models that need more than one optimiser step per batch (the AAE).
    """

    name: ClassVar[str]

    def __init__(self, **config: Any) -> None:
        super().__init__()
        self.config: dict[str, Any] = dict(config)

    def training_loss(self, batch: Tensor) -> Tensor:
        """Scalar loss for a batch of normal images (B, 1, H, W)."""
        raise NotImplementedError

    @torch.no_grad()
    def score(self, images: Tensor) -> Tensor:
        """Anomaly score per image, shape (B,); higher means more anomalous."""
        raise NotImplementedError


def register_detector(cls: type[Detector]) -> type[Detector]:
    """Class decorator: make a detector available by its ``name``."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"detector name {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def _load_all() -> None:
    for module in DETECTOR_MODULES:
        importlib.import_module(f"darklens.models.{module}")


def list_detectors() -> list[str]:
    """Names of every registered detector, sorted."""
    _load_all()
    return sorted(_REGISTRY)


def create_detector(name: str, **config: Any) -> Detector:
    """Build a detector by name from its config."""
    _load_all()
    if name not in _REGISTRY:
        raise KeyError(f"unknown detector {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](**config)
