"""The Detector contract and the registry of detectors by name.

A detector is a plain ``nn.Module`` that knows its training loss for a batch and its anomaly
score (higher = more anomalous). One file per detector, registered with ``@register_detector``;
``create_detector(name, **config)`` rebuilds it from its saved config.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from darklens.errors import DarklensError

_REGISTRY: dict[str, type[Detector]] = {}

# Modules that define detectors; importing them fills the registry. A new detector is one file
# plus one line here.
DETECTOR_MODULES: tuple[str, ...] = (
    "dcae", "cvae", "aae", "rbm", "deep_svdd", "knn", "infotheoretic", "residual_chi2",
)


@dataclass
class OptimizerGroup:
    """Parameters stepped by one optimiser; the loop makes one optimiser (and scheduler) per group.

    ``lr_scale`` multiplies the run's learning rate; ``weight_decay`` overrides the run's value
    when not None.
    """

    params: list[nn.Parameter]
    lr_scale: float = 1.0
    weight_decay: float | None = None


class Detector(nn.Module):
    """An anomaly detector trained on normal images only.

    Subclasses set ``name``, keep their constructor arguments in ``self.config`` (JSON-able),
    and implement ``training_loss`` and ``score``. Optional hooks, all used by
    ``darklens.train.loop.fit``:

    - ``fit_start(loader)``: once before the first epoch (Deep SVDD's centre, kNN's memory bank);
      state it computes must live in buffers so that it is saved with the weights.
    - ``fit_end(loader, val_loader)``: once after training, with the final (best) weights, on
      the training images and the normal validation images (None when there are none); e.g.
      the memory bank of a trained encoder (the infotheoretic detector). Buffers, as above.
    - ``optimizer_groups()``: named parameter groups, one optimiser each (default: one group
      ``"main"`` with every trainable parameter; none at all means nothing to train).
    - ``part_loss(batch, part)``: the loss that group ``part`` steps on. The loop runs the groups
      in order on every batch (zero_grad, backward, clip, step), which is how a model with more
      than one optimiser (the AAE) trains inside the one loop. Default: ``training_loss``.
    - ``validation_loss(batch)``: deterministic loss on normal validation images for early
      stopping (default: ``training_loss`` under ``no_grad`` in eval mode).
    - ``validation_terms()``: further validation columns (means since the last call, then
      reset), added to the losses.csv row after ``validation_loss`` (default: none).
    - ``epoch_terms()``: the mean of each term of the training loss since the last call, as
      named floats; the loop calls it after every epoch and adds them to the losses.csv row.
    - ``wants_labels``: when True the loop passes ``(images, labels)`` instead of ``images``.
    - ``accepts_native_views``: when True, training batches may stack V simulator-native views
      of each image along the channels, (B, V*C, H, W) (``darklens train --views native``).
    - ``train_defaults``: the detector's own defaults for ``TrainConfig`` fields (e.g. lr).

    Optional hooks used outside training, declared here so that callers never probe for them:
    ``diagnostics()`` (JSON-able state recorded with a run; default None); ``embed(images)``
    (learned features for the report's maps, where ``representation`` names their source;
    None: no representation); ``set_labelled_anomalies`` and ``set_pseudo_anomalies``
    (anomalous images for a semi-supervised term or a label-free choice; a detector that takes
    them sets ``accepts_labelled_anomalies`` / ``accepts_pseudo_anomalies``);
    ``where_map(images)`` (a per-pixel map (B, H, W) of what makes each image anomalous,
    higher = more: an autoencoder's reconstruction error, the smooth-lens fit's residual; None,
    the default: no map of its own, and ``darklens.evaluate.where_maps`` takes an occlusion
    saliency of ``score`` instead).
    """

    name: ClassVar[str]
    wants_labels: ClassVar[bool] = False
    accepts_native_views: ClassVar[bool] = False
    train_defaults: ClassVar[dict[str, Any]] = {}
    # detector options that ``darklens train --input residual`` sets unless the config does
    residual_defaults: ClassVar[dict[str, Any]] = {}
    representation: ClassVar[str | None] = None
    accepts_labelled_anomalies: ClassVar[bool] = False
    accepts_pseudo_anomalies: ClassVar[bool] = False

    def __init__(self, **config: Any) -> None:
        super().__init__()
        self.config: dict[str, Any] = dict(config)

    def training_loss(self, batch: Tensor) -> Tensor:
        """Scalar loss for a batch of normal images (B, 1, H, W)."""
        raise NotImplementedError

    def part_loss(self, batch: Tensor, part: str) -> Tensor:
        """Loss for optimiser group ``part`` (see ``optimizer_groups``)."""
        return self.training_loss(batch)

    def validation_loss(self, batch: Tensor) -> Tensor:
        """Loss on normal validation images, used for early stopping."""
        return self.training_loss(batch)

    def optimizer_groups(self) -> dict[str, OptimizerGroup]:
        """Named parameter groups, each stepped by its own optimiser, in this order."""
        params = [p for p in self.parameters() if p.requires_grad]
        return {"main": OptimizerGroup(params)} if params else {}

    def validation_terms(self) -> dict[str, float]:
        """Further validation columns since the last call, then reset (default: none)."""
        return {}

    def epoch_terms(self) -> dict[str, float]:
        """Per-term means of the training loss since the last call, then reset (default: none)."""
        return {}

    def fit_start(self, loader: Iterable) -> None:
        """Called once with the training data before the first epoch (not again on resume)."""

    def fit_end(self, loader: Iterable, val_loader: Iterable | None = None) -> None:
        """Called once after training with the final weights (training and validation data)."""

    def selection_loss(self, loader: Iterable, val_loader: Iterable | None = None
                       ) -> float | None:
        """A label-free criterion for the best epoch, lower is better, computed after each
        epoch; None (the default) leaves the choice to the validation loss."""
        return None

    def forward(self, batch: Tensor, part: str = "main") -> Tensor:
        """The loss of one part, so that a DistributedDataParallel wrapper sees every forward."""
        return self.part_loss(batch, part)

    @torch.no_grad()
    def score(self, images: Tensor) -> Tensor:
        """Anomaly score per image, shape (B,); higher means more anomalous."""
        raise NotImplementedError

    def diagnostics(self) -> dict[str, Any] | None:
        """JSON-able state worth recording with a run (e.g. a collapse watch); None: nothing."""
        return None

    def embed(self, images: Tensor) -> Tensor:
        """Learned features (B, D) of ``images`` (only when ``representation`` is set)."""
        raise NotImplementedError(f"detector {self.name} has no learned representation")

    @torch.no_grad()
    def where_map(self, images: Tensor) -> Tensor | None:
        """Per-pixel anomaly map (B, H, W) of images (B, C, H, W), or None (no map of its own)."""
        return None

    def set_labelled_anomalies(self, images: Tensor | None) -> None:
        """Labelled anomalous images (only when ``accepts_labelled_anomalies``)."""
        raise NotImplementedError(f"detector {self.name} does not use labelled anomalies")

    def set_pseudo_anomalies(self, images: Tensor | None) -> None:
        """Pseudo-anomalies for a label-free choice (only when ``accepts_pseudo_anomalies``)."""
        raise NotImplementedError(f"detector {self.name} does not use pseudo-anomalies")


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


def detector_class(name: str) -> type[Detector]:
    """The class registered as ``name`` (KeyError if none)."""
    _load_all()
    if name not in _REGISTRY:
        raise KeyError(f"unknown detector {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def require_detector(name: str) -> None:
    """A one-line ``DarklensError`` (the CLI's exit 2) unless ``name`` is a registered detector."""
    if name not in list_detectors():
        raise DarklensError(f"unknown detector {name!r}; known: {', '.join(list_detectors())}")


def create_detector(name: str, **config: Any) -> Detector:
    """Build a detector by name from its config."""
    _load_all()
    if name not in _REGISTRY:
        raise KeyError(f"unknown detector {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](**config)
