"""What the one training loop (``darklens.train.loop.fit``) needs from the model it trains.

Every detector (``darklens.models.base.Detector``) is a ``Trainable``; so is a regressor of
dark-matter properties wrapped with its loss (``darklens.train.regression.RegressionTrainable``).
The loop owns everything else: optimisers and schedules, checkpoints and resume, early
stopping, the time budget, the per-epoch CSV and DDP.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar, Protocol, runtime_checkable

from torch import Tensor

from darklens.models.base import OptimizerGroup


@runtime_checkable
class Trainable(Protocol):
    """An ``nn.Module`` with loss hooks and optional validation, as the loop calls them.

    - ``name``: recorded in the checkpoint, which a resume checks.
    - ``wants_labels``: batches are ``(images, labels_or_targets)`` instead of ``images``.
    - ``optimizer_groups()``: named parameter groups, one optimiser each, stepped in order.
    - ``forward(batch, part)``: the training loss of group ``part`` (through ``__call__``, so
      that a DistributedDataParallel wrapper sees it).
    - ``validation_loss(batch)``: the loss that early stopping and ``best_epoch`` follow.
    - ``validation_terms()``: further validation columns (means since the last call, then
      reset; e.g. a regressor's MAE per target), added to the epoch's row.
    - ``epoch_terms()``: the training loss's terms since the last call, then reset.
    - ``fit_start(images)`` / ``fit_end(images, val_images)``: once before the first epoch
      (not on resume) and once after training.
    - ``selection_loss(images, val_images)``: after every epoch, a label-free criterion for the
      best epoch (lower is better) that takes the validation loss's place for ``best_epoch``
      and early stopping; None where the model has none.
    """

    name: ClassVar[str]
    wants_labels: ClassVar[bool]

    def optimizer_groups(self) -> dict[str, OptimizerGroup]: ...

    def forward(self, batch: Any, part: str = "main") -> Tensor: ...

    def validation_loss(self, batch: Any) -> Tensor: ...

    def validation_terms(self) -> dict[str, float]: ...

    def epoch_terms(self) -> dict[str, float]: ...

    def fit_start(self, loader: Iterable) -> None: ...

    def fit_end(self, loader: Iterable, val_loader: Iterable | None = None) -> None: ...

    def selection_loss(self, loader: Iterable, val_loader: Iterable | None = None
                       ) -> float | None: ...

