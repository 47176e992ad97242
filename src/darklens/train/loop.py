"""One training loop for every detector and regressor: optimisers, schedules, checkpoints, resume.

``fit(detector, train_data, val_data, config)`` trains any ``Trainable``
(``darklens.train.trainable``): a detector on normal images, or a regressor of dark-matter
properties on (image, target) pairs (``darklens.train.regression``). Per batch it runs the
detector's optimiser groups in order (one group for most models, three for the AAE): loss,
backward, gradient clipping, step, scheduler step. After every epoch it computes the validation
loss (and the model's ``validation_terms``; a model's label-free ``selection_loss``, where it
gives one, decides the best epoch in its place), appends a row to ``<out_dir>/losses.csv`` (with the
loss's separate terms where the model reports them, ``epoch_terms``) and writes
``<out_dir>/checkpoint.pt`` atomically (model, optimisers, schedulers, RNG states, history, best
model so far). ``resume=True`` continues from that checkpoint and ends with the same weights as an
uninterrupted run. A non-finite loss stops training with ``TrainingDiverged`` and leaves the last
good checkpoint in place.

Data: any map-style ``Dataset`` of ``(image, label)`` (or of images), or an ``IterableDataset``
(e.g. an endless simulator stream) with ``steps_per_epoch`` set; a stream with a
``set_epoch(epoch)`` method is told the epoch, so a resumed stream replays the same draws.

Under ``torchrun`` (process group initialised, see ``darklens.train.distributed``) the model is
wrapped in ``DistributedDataParallel``; each rank trains on its shard; rank 0 writes the files.

(About 400 lines, one file: the checkpoint that ``fit`` writes and the resume that reads it
back must hold exactly the same state, so the loop, its checkpoint and its resume stay together.)
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset, RandomSampler

from darklens.device import resolve_device
from darklens.errors import CheckpointError, DarklensError
from darklens.io import atomic_path, write_text_atomic
from darklens.options import dataclass_from_dict
from darklens.progress import progress_bar
from darklens.safe_load import safe_torch_load
from darklens.train import distributed as dd
from darklens.train.rng import get_rng_state, seed_everything, set_rng_state
from darklens.train.trainable import Trainable

CHECKPOINT = "checkpoint.pt"
LOSS_CSV = "losses.csv"


class TrainingDiverged(DarklensError):
    """The loss became NaN or infinite."""


@dataclass
class TrainConfig:
    """Everything that decides a training run (JSON-able; recorded in the run directory)."""

    epochs: int = 50
    batch_size: int = 100
    lr: float = 2e-3
    weight_decay: float = 1e-5
    optimizer: str = "adam"  # adam | adamw | sgd
    momentum: float = 0.9  # SGD only
    scheduler: str = "one-cycle"  # one-cycle | cosine | none (stepped every batch)
    grad_clip: float | None = None  # max gradient norm per optimiser group
    patience: int | None = None  # early stopping: epochs without validation improvement
    min_delta: float = 0.0
    restore_best: bool = True  # end with the weights of the best validation epoch
    seed: int = 0
    out_dir: str | None = None  # checkpoint.pt and losses.csv go here
    resume: bool = False
    steps_per_epoch: int | None = None  # required for an IterableDataset
    num_workers: int = 0
    device: str = "cpu"  # cpu | cuda | auto
    progress: bool = True
    # Time budget: stop after an epoch when another epoch (at the mean epoch time so far) would
    # pass this many minutes of training in total (resumed time included). At least one epoch.
    max_minutes: float | None = None

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a dict, rejecting unknown keys with a clear message."""
        return dataclass_from_dict(cls, values, "training")


@dataclass
class TrainResult:
    """What a run did: one history row per epoch (train losses per part, val_loss, lr, time)."""

    history: list[dict[str, float]] = field(default_factory=list)
    epochs_run: int = 0
    best_epoch: int | None = None
    best_val_loss: float | None = None
    stopped_early: bool = False
    seconds: float = 0.0
    checkpoint: str | None = None
    stopped_by_time: bool = False  # ``max_minutes`` ended training before ``epochs``


class _Images:
    """Re-iterable, unshuffled view of ``data`` that yields image tensors on the device (for
    fit_start and fit_end); a stream stops after ``steps_per_epoch`` batches."""

    def __init__(self, data: Dataset, cfg: TrainConfig, device: torch.device):
        self.loader, self.device = _loader(data, cfg, False, None), device
        self.max_steps = cfg.steps_per_epoch if isinstance(data, IterableDataset) else None

    def __iter__(self) -> Iterator[Tensor]:
        for i, batch in enumerate(self.loader):
            if self.max_steps is not None and i >= self.max_steps:
                return
            yield _images_of(batch).to(self.device)


def _images_of(batch: Any) -> Tensor:
    return batch[0] if isinstance(batch, (list, tuple)) else batch


def _make_optimizer(cfg: TrainConfig, params: list[nn.Parameter], lr: float,
                    weight_decay: float) -> torch.optim.Optimizer:
    name = cfg.optimizer.lower()
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=weight_decay)
    raise DarklensError(f"unknown optimizer {cfg.optimizer!r}; use adam, adamw or sgd")


def _make_scheduler(cfg: TrainConfig, opt: torch.optim.Optimizer, lr: float,
                    total_steps: int) -> torch.optim.lr_scheduler.LRScheduler | None:
    name = cfg.scheduler.lower()
    if name == "none":
        return None
    if name == "one-cycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total_steps)
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
    raise DarklensError(f"unknown scheduler {cfg.scheduler!r}; use one-cycle, cosine or none")


def _loader(data: Dataset, cfg: TrainConfig, shuffle: bool,
            generator: torch.Generator | None) -> DataLoader:
    if isinstance(data, IterableDataset):
        return DataLoader(data, batch_size=cfg.batch_size, num_workers=cfg.num_workers)
    n = len(data)  # type: ignore[arg-type]
    if n == 0:
        raise DarklensError("no images to train on")
    sampler = None
    if shuffle:
        if dd.is_distributed():
            sampler = DistributedSampler(data, shuffle=True, seed=cfg.seed, drop_last=True)
        else:
            sampler = RandomSampler(data, generator=generator)
    # Full batches only while training when there is more than one (BatchNorm needs B > 1).
    drop_last = shuffle and n // max(1, dd.world_size()) > cfg.batch_size
    return DataLoader(data, batch_size=cfg.batch_size, sampler=sampler, drop_last=drop_last,
                      num_workers=cfg.num_workers, generator=generator)


def _steps_per_epoch(data: Dataset, loader: DataLoader, cfg: TrainConfig) -> int:
    if isinstance(data, IterableDataset):
        if not cfg.steps_per_epoch:
            raise DarklensError("an endless data stream needs steps_per_epoch")
        return cfg.steps_per_epoch
    steps = len(loader)
    return min(steps, cfg.steps_per_epoch) if cfg.steps_per_epoch else steps


def _batch_for(detector: Trainable, batch: Any, device: torch.device) -> Any:
    if detector.wants_labels and isinstance(batch, (list, tuple)):
        return tuple(b.to(device) for b in batch)
    return _images_of(batch).to(device)


@torch.no_grad()
def validation_loss(detector: Trainable, data: Dataset, batch_size: int,
                    device: torch.device) -> float:
    """Mean validation loss (weighted by batch size), eval mode."""
    detector.eval()
    total, n = 0.0, 0
    for batch in DataLoader(data, batch_size=batch_size):
        b = _batch_for(detector, batch, device)
        size = _images_of(b).shape[0] if isinstance(b, tuple) else b.shape[0]
        total += float(detector.validation_loss(b)) * size
        n += size
    return total / max(n, 1)


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a training checkpoint safely (``weights_only=True``)."""
    if not Path(path).is_file():
        raise CheckpointError(f"{path}: no checkpoint to resume from")
    return safe_torch_load(path)  # one-line CheckpointError if corrupt or holding pickled code


def _write_csv(path: Path, history: list[dict[str, float]]) -> None:
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    write_text_atomic(path, buf.getvalue())


def _clone_state(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def fit(detector: Trainable, train_data: Dataset, val_data: Dataset | None = None,
        config: TrainConfig | None = None,
        on_epoch_end: Callable[[int, dict[str, float]], None] | None = None) -> TrainResult:
    """Train ``detector`` (any ``Trainable``); see the module docstring.

    ``on_epoch_end(epoch, row)`` is called after each epoch's checkpoint is written (epoch
    counts from 1). Returns a ``TrainResult``; the detector is left in eval mode with the best
    validation weights if ``restore_best`` (and validation data) are set, else the last ones.
    """
    cfg = config or TrainConfig()
    device = resolve_device(cfg.device)
    out_dir = Path(cfg.out_dir) if cfg.out_dir else None
    ckpt_path = out_dir / CHECKPOINT if out_dir else None
    is_main = dd.rank() == 0
    start = time.perf_counter()

    seed_everything(cfg.seed)
    detector.to(device)
    dd.broadcast_module(detector)
    generator = torch.Generator().manual_seed(cfg.seed)
    loader = _loader(train_data, cfg, shuffle=True, generator=generator)
    steps = _steps_per_epoch(train_data, loader, cfg)
    groups = detector.optimizer_groups()
    optimizers: dict[str, torch.optim.Optimizer] = {}
    schedulers: dict[str, Any] = {}
    for name, group in groups.items():
        lr = cfg.lr * group.lr_scale
        wd = cfg.weight_decay if group.weight_decay is None else group.weight_decay
        optimizers[name] = _make_optimizer(cfg, group.params, lr, wd)
        sched = _make_scheduler(cfg, optimizers[name], lr, max(1, cfg.epochs * steps))
        if sched is not None:
            schedulers[name] = sched

    result = TrainResult(checkpoint=str(ckpt_path) if ckpt_path else None)
    best_state: dict[str, Tensor] | None = None
    bad_epochs, first_epoch, prior_seconds = 0, 0, 0.0

    if cfg.resume and ckpt_path is not None and ckpt_path.exists():
        ck = load_checkpoint(ckpt_path)
        if ck.get("detector") != detector.name:
            raise CheckpointError(f"{ckpt_path}: checkpoint is for detector "
                                  f"{ck.get('detector')!r}, not {detector.name!r}")
        saved_epochs = ck.get("train_config", {}).get("epochs", cfg.epochs)
        if schedulers and saved_epochs != cfg.epochs:
            raise CheckpointError(f"{ckpt_path}: the run was started with {saved_epochs} epochs "
                                  f"and a {cfg.scheduler} schedule spread over them; resume "
                                  f"with the same number of epochs (not {cfg.epochs})")
        try:
            detector.load_state_dict(ck["model"])
            for name, opt in optimizers.items():
                opt.load_state_dict(ck["optimizers"][name])
            for name, sched in schedulers.items():
                sched.load_state_dict(ck["schedulers"][name])
        except (KeyError, RuntimeError, ValueError) as err:
            raise CheckpointError(f"{ckpt_path}: does not match this model/config ({err})") \
                from err
        set_rng_state(ck["rng"])
        generator.set_state(ck["loader_rng"])
        result.history = list(ck["history"])
        result.best_epoch, result.best_val_loss = ck["best_epoch"], ck["best_val_loss"]
        best_state = ck.get("best_model")
        bad_epochs, first_epoch = ck["bad_epochs"], ck["epoch"]
        prior_seconds = ck.get("seconds", 0.0)
        if ck.get("stopped_early"):
            result.stopped_early = True
            first_epoch = cfg.epochs
    else:
        detector.train()
        detector.fit_start(_Images(train_data, cfg, device))
        dd.broadcast_module(detector, buffers_only=True)

    model: nn.Module = detector
    if dd.is_distributed() and optimizers:
        model = DistributedDataParallel(detector, find_unused_parameters=len(optimizers) > 1)

    for epoch in range(first_epoch, cfg.epochs if optimizers else 0):
        if isinstance(getattr(loader, "sampler", None), DistributedSampler):
            loader.sampler.set_epoch(epoch)
        if hasattr(train_data, "set_epoch"):
            train_data.set_epoch(epoch)
        detector.train()
        t0 = time.perf_counter()
        sums = dict.fromkeys(optimizers, 0.0)
        count = 0
        bar = progress_bar(total=steps, desc=f"{detector.name} epoch {epoch + 1}/{cfg.epochs}",
                           unit="step", disable=not (cfg.progress and is_main), leave=False)
        for step, batch in enumerate(loader):
            if step >= steps:
                break
            b = _batch_for(detector, batch, device)
            for name, opt in optimizers.items():
                loss = model(b, name)
                if dd.any_rank(not bool(torch.isfinite(loss))):
                    bar.close()
                    last = (f"last good checkpoint: {ckpt_path} (epoch {epoch})"
                            if ckpt_path is not None and ckpt_path.exists()
                            else "no checkpoint was written")
                    raise TrainingDiverged(
                        f"{detector.name}: loss of part {name!r} became "
                        f"{float(loss.detach())} at epoch {epoch + 1}, step {step + 1}; {last}. "
                        f"Try a lower learning rate or gradient clipping (grad_clip).")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip:
                    params = [p for g in opt.param_groups for p in g["params"]]
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                opt.step()
                if name in schedulers:
                    schedulers[name].step()
                sums[name] += float(loss.detach())
            count += 1
            bar.update(1)
            bar.set_postfix(loss=f"{sums[next(iter(sums))] / count:.4g}")
        bar.close()
        dd.broadcast_module(detector, buffers_only=True)

        row: dict[str, float] = {"epoch": epoch + 1}
        for name in optimizers:
            row[f"train_{name}" if len(optimizers) > 1 else "train_loss"] = sums[name] / max(
                count, 1)
        row.update(detector.epoch_terms())  # the loss's terms, where the detector has them
        first_opt = next(iter(optimizers.values()))
        row["lr"] = first_opt.param_groups[0]["lr"]
        if val_data is not None and len(val_data):  # type: ignore[arg-type]
            val = validation_loss(detector, val_data, cfg.batch_size, device)
            if not math.isfinite(val):
                raise TrainingDiverged(f"{detector.name}: validation loss became {val} at "
                                       f"epoch {epoch + 1}; last good checkpoint: {ckpt_path}")
            row["val_loss"] = val
            row.update(detector.validation_terms())
            # a model's own label-free criterion, where it has one, picks the epoch instead
            chosen = detector.selection_loss(_Images(train_data, cfg, device),
                                             _Images(val_data, cfg, device))
            if chosen is not None:
                row["selection_loss"] = val = float(chosen)
            if result.best_val_loss is None or val < result.best_val_loss - cfg.min_delta:
                result.best_val_loss, result.best_epoch, bad_epochs = val, epoch + 1, 0
                if cfg.restore_best:
                    best_state = _clone_state(detector)
            else:
                bad_epochs += 1
        row["seconds"] = time.perf_counter() - t0
        result.history.append(row)
        stop = cfg.patience is not None and bad_epochs >= cfg.patience
        result.stopped_early = stop and epoch + 1 < cfg.epochs

        if out_dir is not None and is_main:
            _save_checkpoint(ckpt_path, {
                "detector": detector.name,
                "epoch": epoch + 1,
                "model": detector.state_dict(),
                "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
                "schedulers": {k: s.state_dict() for k, s in schedulers.items()},
                "rng": get_rng_state(),
                "loader_rng": generator.get_state(),
                "history": result.history,
                "best_epoch": result.best_epoch,
                "best_val_loss": result.best_val_loss,
                "best_model": best_state,
                "bad_epochs": bad_epochs,
                "stopped_early": result.stopped_early,
                "seconds": prior_seconds + time.perf_counter() - start,
                "train_config": asdict(cfg),
            })
            _write_csv(out_dir / LOSS_CSV, result.history)
        dd.barrier()
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, row)
        if stop:
            break
        if cfg.max_minutes is not None and epoch + 1 < cfg.epochs:
            spent = prior_seconds + time.perf_counter() - start
            per_epoch = spent / max(1, epoch + 1)
            if dd.any_rank(spent + per_epoch > 60.0 * cfg.max_minutes):
                result.stopped_by_time = True
                break

    if cfg.restore_best and best_state is not None:
        detector.load_state_dict(best_state)
    detector.eval()
    has_val = val_data is not None and len(val_data)  # type: ignore[arg-type]
    detector.fit_end(_Images(train_data, cfg, device),
                     _Images(val_data, cfg, device) if has_val else None)
    detector.eval()
    result.epochs_run = len(result.history)
    result.seconds = prior_seconds + time.perf_counter() - start
    return result
