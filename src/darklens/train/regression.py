"""Training regressors of dark-matter properties: data selection, split, loop, ensemble.

``train_regression(data, config, out_dir)``:

1. Selects the images that carry the targets (``darklens.data.targets.regression_subset``):
   by default the classes the target belongs to (``log10_axion_mass`` from vortex images,
   ``f_sub`` and ``n_subhalos`` from CDM images, anything else from every class), then drops
   images whose target is NaN, saying how many; if none is left the error says why (e.g. a
   preset that does not tie the vortex length to an axion mass).
2. Splits them deterministically (``split_indices`` with the run's seed, stratified by class)
   into train/val/test and records the indices in ``RUN/split.json``; ``darklens regress
   evaluate`` uses the test part when given the same data (checked by a fingerprint of the
   images), so a test score is never measured on training images.
3. Standardises the targets with the training images' mean and std (stored in the model)
   and records each target's training prior (``training_prior`` in ``regression.json``;
   ``darklens.models.training_prior``), which population inference divides out.
4. Trains each ensemble member (seed ``seed + 1000 k``) with random dihedral augmentation
   (exact 90-degree rotations and flips) on the Gaussian NLL; validates each epoch (NLL and MAE
   on the validation images), stops early after ``patience`` epochs without improvement, keeps
   the best epoch's weights, writes ``member-K/checkpoint.pt`` atomically each epoch and a CSV
   log. ``resume=True`` continues an interrupted run from its checkpoints and ends with the
   same weights as an uninterrupted run. ``time_limit`` (seconds, shared evenly by members)
   stops training when spent (used by the CPU benchmark).
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from darklens import __version__
from darklens.data.dataset import Normaliser, split_indices
from darklens.data.fingerprint import fingerprint
from darklens.data.lensdata import LensData
from darklens.data.targets import regression_subset
from darklens.errors import CheckpointError, DarklensError, DataError
from darklens.io import atomic_path, write_json_atomic, write_text_atomic
from darklens.models.regression_run import (
    RUN_JSON,
    SPLIT_JSON,
    WEIGHTS,
    is_training_data,
    member_dir,
    read_json,
)
from darklens.models.regressor import Regressor, gaussian_nll, random_dihedral
from darklens.models.training_prior import describe_training_prior
from darklens.options import dataclass_from_dict
from darklens.train.loop import load_checkpoint
from darklens.train.rng import get_rng_state, seed_everything, set_rng_state

#: Targets that change under rotations or flips: dihedral augmentation would corrupt them.
NOT_ROTATION_INVARIANT = ("lens_center_x", "lens_center_y", "lens_phi", "shear_angle",
                          "source_x", "source_y", "source_phi", "vortex_angle", "vortex_x",
                          "vortex_y")
CHECKPOINT = "checkpoint.pt"
LOG_CSV = "log.csv"


@dataclass
class RegressionConfig:
    """Everything that decides a regression run (JSON-able; recorded in ``regression.json``)."""

    targets: list[str]
    arch: str = "small"  # small | resnet18 | resnet34
    epochs: int = 30
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    scheduler: str = "cosine"  # cosine | one-cycle | none (stepped every batch)
    patience: int | None = 10  # early stopping on the validation NLL
    beta: float = 0.0  # beta-NLL exponent (0: plain Gaussian NLL)
    dropout: float = 0.0
    norm: str = "batch"  # batch | group (normalisation layers of the ResNet)
    augment: bool = True  # random dihedral transform per training image
    ensemble: int = 1
    seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    classes: list[str] | None = None  # None: the targets' own classes (data.targets)
    normalisation: str = "minmax"  # per-image, see darklens.data.dataset
    time_limit: float | None = None  # seconds for all members together
    device: str = "cpu"

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RegressionConfig:
        """Build from a dict, rejecting unknown keys with a clear message."""
        return dataclass_from_dict(cls, values, "regression")


def _atomic_torch_save(path: Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _write_csv(path: Path, rows: list[dict[str, float]]) -> None:
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buf.getvalue())


def _scheduler(name: str, opt: torch.optim.Optimizer, lr: float, total: int):
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total))
    if name == "one-cycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(1, total))
    if name == "none":
        return None
    raise DarklensError(f"unknown scheduler {name!r}; use cosine, one-cycle or none")


@torch.no_grad()
def _validate(model: Regressor, x: torch.Tensor, y_std: torch.Tensor,
              batch_size: int) -> tuple[float, np.ndarray]:
    """Validation NLL (standardised units) and MAE per target (physical units), eval mode."""
    model.eval()
    nll, abs_err = 0.0, torch.zeros(y_std.shape[1], dtype=torch.float64)
    for lo in range(0, len(x), batch_size):
        mu, lv = model(x[lo:lo + batch_size])
        yb = y_std[lo:lo + batch_size]
        nll += float(gaussian_nll(mu, lv, yb, reduction="sum")) / y_std.shape[1]
        abs_err += (mu.double() - yb.double()).abs().sum(0) * model.target_std.cpu()
    n = max(len(x), 1)
    return nll / n, (abs_err / n).numpy()


def _train_member(k: int, cfg: RegressionConfig, model: Regressor, x_tr: torch.Tensor,
                  y_tr: torch.Tensor, x_va: torch.Tensor, y_va: torch.Tensor, out: Path,
                  resume: bool, time_limit: float | None,
                  log: Callable[[str], None]) -> dict[str, Any]:
    """Train one member; return its summary. Checkpoint and CSV in ``out`` every epoch."""
    seed = cfg.seed + 1000 * k
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(cfg.device)
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = len(x_tr)
    drop_last = n > cfg.batch_size
    steps = n // cfg.batch_size if drop_last else 1
    sched = _scheduler(cfg.scheduler, opt, cfg.lr, cfg.epochs * steps)
    gen = torch.Generator().manual_seed(seed)
    history: list[dict[str, float]] = []
    best_state, best_val, best_epoch, bad, first = None, None, None, 0, 0
    stopped, seconds_before = "", 0.0
    ckpt = out / CHECKPOINT
    if resume and ckpt.exists():
        ck = load_checkpoint(ckpt)
        try:
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            if sched is not None:
                sched.load_state_dict(ck["scheduler"])
        except (KeyError, RuntimeError, ValueError) as err:
            raise CheckpointError(f"{ckpt}: does not match this model/config ({err})") from err
        set_rng_state(ck["rng"])
        gen.set_state(ck["loader_rng"])
        history, best_state = list(ck["history"]), ck["best_model"]
        best_val, best_epoch, bad = ck["best_val"], ck["best_epoch"], ck["bad_epochs"]
        first, stopped, seconds_before = ck["epoch"], ck["stopped"], ck["seconds"]
        log(f"member {k}: resuming after epoch {first}")
    start = time.perf_counter()
    epoch = first
    while epoch < cfg.epochs and not stopped:
        model.train()
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=gen)
        total, count = 0.0, 0
        for s in range(steps):
            idx = perm[s * cfg.batch_size:(s + 1) * cfg.batch_size] if drop_last else perm
            xb = x_tr[idx]
            if cfg.augment:
                xb = random_dihedral(xb, gen)
            mu, lv = model(xb.to(device))
            loss = gaussian_nll(mu, lv, y_tr[idx].to(device), beta=cfg.beta)
            if not torch.isfinite(loss):
                raise DarklensError(f"member {k}: loss became {float(loss)} at epoch {epoch + 1};"
                                    f" last good checkpoint: {ckpt}. Try a lower --lr.")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        val_nll, val_mae = _validate(model, x_va.to(device), y_va.to(device), 256)
        epoch += 1
        row: dict[str, float] = {"epoch": epoch, "train_loss": total / max(count, 1),
                                 "val_nll": val_nll, "lr": opt.param_groups[0]["lr"]}
        for t, v in zip(cfg.targets, val_mae, strict=True):
            row[f"val_mae_{t}"] = float(v)
        row["seconds"] = time.perf_counter() - t0
        history.append(row)
        if not math.isfinite(val_nll):
            raise DarklensError(f"member {k}: validation NLL became {val_nll} at epoch {epoch}")
        if best_val is None or val_nll < best_val:
            best_val, best_epoch, bad = val_nll, epoch, 0
            best_state = {key: v.detach().cpu().clone() for key, v in model.state_dict().items()}
        else:
            bad += 1
        if cfg.patience is not None and bad >= cfg.patience:
            stopped = "early"
        elapsed = time.perf_counter() - start
        if time_limit is not None and epoch < cfg.epochs and \
                elapsed + elapsed / (epoch - first) > time_limit:
            stopped = "time"  # the next epoch would overrun the budget
        _atomic_torch_save(ckpt, {
            "epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict() if sched is not None else {},
            "rng": get_rng_state(), "loader_rng": gen.get_state(), "history": history,
            "best_model": best_state, "best_val": best_val, "best_epoch": best_epoch,
            "bad_epochs": bad, "stopped": stopped,
            "seconds": seconds_before + time.perf_counter() - start,
        })
        _write_csv(out / LOG_CSV, history)
        mae = ", ".join(f"{t} {v:.4g}" for t, v in zip(cfg.targets, val_mae, strict=True))
        log(f"member {k} epoch {epoch}/{cfg.epochs}: train {row['train_loss']:.4f}, "
            f"val NLL {val_nll:.4f}, val MAE {mae} ({row['seconds']:.1f}s)")
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    weights = {key: v.detach().cpu() for key, v in model.state_dict().items()}
    _atomic_torch_save(out / WEIGHTS, weights)
    return {"seed": seed, "epochs_run": len(history), "best_epoch": best_epoch,
            "best_val_nll": best_val, "stopped": stopped or "epochs",
            "seconds": seconds_before + time.perf_counter() - start}


def train_regression(data: LensData, config: RegressionConfig, out_dir: str | Path,
                     resume: bool = False, data_source: str = "",
                     log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train (or resume) a regression run in ``out_dir``; return the run description."""
    cfg = config
    out = Path(out_dir)
    if cfg.ensemble < 1:
        raise DarklensError("--ensemble must be at least 1")
    if cfg.epochs < 1:
        raise DarklensError("--epochs must be at least 1")
    if cfg.augment:
        bad = [t for t in cfg.targets if t in NOT_ROTATION_INVARIANT]
        if bad:
            raise DarklensError(f"target(s) {', '.join(bad)} change under rotations; "
                                "train them with --no-augment")
    source = data_source or "the data"
    subset = regression_subset(data, cfg.targets, cfg.classes, source)
    for msg in subset.messages:
        log(f"{source}: {msg}")
    val_f, test_f = cfg.val_fraction, cfg.test_fraction
    if not (0 < val_f < 1 and 0 <= test_f < 1 and val_f + test_f < 1):
        raise DarklensError("validation and test fractions must be in (0, 1) and sum below 1")
    labels = data.labels[subset.indices]
    split = split_indices(labels, (1 - val_f - test_f, val_f, test_f), seed=cfg.seed)
    if len(split.train) < 2 or len(split.val) < 1:
        raise DataError(f"{source}: only {len(subset.indices)} usable images: too few to split "
                        "into training and validation sets")
    data_fp = fingerprint(data)
    out.mkdir(parents=True, exist_ok=True)
    info_path = out / RUN_JSON
    config_dict = asdict(cfg)
    config_dict["classes"] = subset.classes
    if resume and info_path.exists():
        old = read_json(info_path, "run description")
        if not is_training_data(data, old):
            raise CheckpointError(f"{out}: was trained on other data; cannot resume with "
                                  f"{source}")
        keys = ("targets", "arch", "norm", "ensemble", "seed", "val_fraction",
                "test_fraction")
        diff = [k for k in keys if old.get("config", {}).get(k) != config_dict[k]]
        if diff:
            raise CheckpointError(f"{out}: cannot resume with different {', '.join(diff)}")
    elif not resume and (info_path.exists() or any(out.glob("member-*"))):
        raise DarklensError(f"{out}: already holds a run; use --resume or another --out")

    normaliser = Normaliser.fit(cfg.normalisation, data.images[subset.indices[split.train]]
                                if cfg.normalisation == "standard" else None)
    train_vals = subset.values[split.train]
    t_mean, t_std = train_vals.mean(axis=0), train_vals.std(axis=0)

    def tensors(part: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(normaliser(data.images[subset.indices[part]]))
        y = torch.from_numpy((subset.values[part] - t_mean) / np.where(t_std > 0, t_std, 1.0))
        return x, y.float()

    preset = data.attrs.get("preset") if isinstance(data.attrs, dict) else None
    x_tr, y_tr = tensors(split.train)
    x_va, y_va = tensors(split.val)
    seed_everything(cfg.seed)
    try:
        model_cfg = Regressor(cfg.targets, cfg.arch, dropout=cfg.dropout, norm=cfg.norm).config
    except ValueError as err:
        raise DarklensError(str(err)) from None
    info: dict[str, Any] = {
        "kind": "regression",
        "darklens_version": __version__,
        "targets": list(cfg.targets),
        "config": config_dict,
        "model": model_cfg,
        "normaliser": normaliser.to_dict(),
        "target_mean": t_mean.tolist(),
        "target_std": t_std.tolist(),
        # what population inference divides out (darklens regress population)
        "training_prior": {t: describe_training_prior(t, train_vals[:, j], preset)
                           for j, t in enumerate(cfg.targets)},
        "image_shape": list(data.images.shape[2:]),
        "data": {"source": str(data_source), "fingerprint": data_fp,
                 "n_images": len(data), "n_usable": len(subset.indices),
                 "n_train": len(split.train), "n_val": len(split.val),
                 "n_test": len(split.test), "excluded": subset.messages,
                 "preset": (data.attrs.get("preset", {}) or {}).get("name")
                 if isinstance(data.attrs.get("preset"), dict) else None},
        "evaluation": "RUN/split.json lists the test images (indices into the loaded data); "
                      "'darklens regress evaluate' uses them when given the same data "
                      "(same fingerprint), else every usable image of the data it is given",
        "members": [],
    }
    write_json_atomic(out / SPLIT_JSON, {
        "train": subset.indices[split.train], "val": subset.indices[split.val],
        "test": subset.indices[split.test]})
    write_json_atomic(info_path, info)
    log(f"{source}: {len(subset.indices)} images of class {', '.join(subset.classes)} -> "
        f"train {len(split.train)}, val {len(split.val)}, test {len(split.test)} (held out)")
    per_member = cfg.time_limit / cfg.ensemble if cfg.time_limit else None
    for k in range(cfg.ensemble):
        seed_everything(cfg.seed + 1000 * k)
        model = Regressor(cfg.targets, cfg.arch, dropout=cfg.dropout, norm=cfg.norm)
        model.set_standardisation(t_mean, t_std)
        summary = _train_member(k, cfg, model, x_tr, y_tr, x_va, y_va, member_dir(out, k),
                                resume, per_member, log)
        info["members"].append(summary)
        write_json_atomic(info_path, info)
    return info
