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
4. Trains each ensemble member (seed ``seed + 1000 k``) in the one training loop
   (``darklens.train.loop.fit``, through ``RegressionTrainable``) with random dihedral
   augmentation (exact 90-degree rotations and flips) on the Gaussian NLL; validates each epoch
   (NLL and MAE on the validation images), stops early after ``patience`` epochs without
   improvement, keeps the best epoch's weights; the loop writes ``member-K/checkpoint.pt``
   atomically each epoch and ``member-K/losses.csv``. ``resume=True`` continues an interrupted
   run from its checkpoints and ends with the same weights as an uninterrupted run.
   ``max_minutes`` (shared evenly by members) stops training when spent (the CPU benchmark).
5. Predicts the validation images (ensemble, TTA), fits the PIT recalibration of their
   posteriors against their truths (``recalibrate``; ``darklens.models.recalibration``,
   ``RUN/recalibration.json``) and records the effective prior, the mean validation
   posterior, of the raw and of the recalibrated posteriors (``effective_prior``,
   ``effective_prior_recalibrated``), which population inference divides out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from darklens import __version__
from darklens.data.dataset import Normaliser, split_indices
from darklens.data.fingerprint import fingerprint
from darklens.data.lensdata import LensData
from darklens.data.targets import regression_subset
from darklens.errors import CheckpointError, DarklensError, DataError
from darklens.io import atomic_path, write_json_atomic
from darklens.models.base import OptimizerGroup
from darklens.models.recalibration import (
    MIN_LENSES,
    UNIFORM_P,
    Recalibration,
    beta_fit,
    pit_values,
)
from darklens.models.regression_persistence import (
    GRID_POINTS,
    RUN_JSON,
    SPLIT_JSON,
    WEIGHTS,
    is_training_data,
    load_regression_run,
    member_dir,
    read_json,
    read_split,
)
from darklens.models.regressor import (
    PosteriorPrediction,
    Regressor,
    predict_posterior,
    random_dihedral,
)
from darklens.models.training_prior import (
    TrainingPrior,
    describe_training_prior,
    given_training_prior,
    prior_support,
)
from darklens.options import dataclass_from_dict
from darklens.train.loop import CHECKPOINT, TrainConfig, fit
from darklens.train.rng import seed_everything

#: Targets that change under rotations or flips: dihedral augmentation would corrupt them.
NOT_ROTATION_INVARIANT = ("lens_center_x", "lens_center_y", "lens_phi", "shear_angle",
                          "source_x", "source_y", "source_phi", "vortex_angle", "vortex_x",
                          "vortex_y")


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
    max_minutes: float | None = None  # training time of all members together
    device: str = "cpu"
    posterior: str = "gaussian"  # gaussian | binned | flow (darklens.models.posterior_heads)
    n_bins: int = 40  # bins of the binned posterior per target
    priors: dict[str, str] | None = None  # target -> known training prior "uniform:LOW:HIGH"
    skip_nan: bool = False  # drop images whose target is NaN (else an error)
    recalibrate: bool = True  # fit the PIT recalibration on the validation images

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RegressionConfig:
        """Build from a dict, rejecting unknown keys with a clear message."""
        return dataclass_from_dict(cls, values, "regression")


class RegressionTrainable(nn.Module):
    """A ``Regressor`` as the one training loop trains it (a ``Trainable``).

    Batches are (images, standardised targets). Training loss: the posterior head's negative
    log-likelihood (the Gaussian head: beta-NLL with ``beta > 0``) after a random dihedral
    transform of each image (``augment``, drawn from the global torch generator, which the loop
    seeds and checkpoints). Validation: the plain NLL; ``validation_terms`` adds the mean
    absolute error of the posterior mean per target in physical units.
    """

    name: ClassVar[str] = "regression"
    wants_labels: ClassVar[bool] = True

    def __init__(self, model: Regressor, beta: float = 0.0, augment: bool = True) -> None:
        super().__init__()
        self.model, self.beta, self.augment = model, beta, augment
        self._abs_err: torch.Tensor | None = None
        self._n = 0

    def optimizer_groups(self) -> dict[str, OptimizerGroup]:
        return {"main": OptimizerGroup(list(self.model.parameters()))}

    def forward(self, batch: tuple[torch.Tensor, torch.Tensor], part: str = "main"
                ) -> torch.Tensor:
        x, y = batch
        if self.augment:
            x = random_dihedral(x)
        return self.model.nll(x, y, beta=self.beta)

    @torch.no_grad()
    def validation_loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        # the flow's mean is estimated from draws: a fixed generator keeps validation (and
        # early stopping) reproducible without touching the training loop's random state
        mu, _ = self.model.component(x).mean_var(torch.Generator().manual_seed(0), n=64)
        err = (mu.double() - y.double()).abs().sum(0).cpu() * self.model.target_std.double().cpu()
        self._abs_err = err if self._abs_err is None else self._abs_err + err
        self._n += len(x)
        return self.model.nll(x, y)

    def validation_terms(self) -> dict[str, float]:
        if self._abs_err is None:
            return {}
        mae = (self._abs_err / max(self._n, 1)).tolist()
        self._abs_err, self._n = None, 0
        return {f"val_mae_{t}": v for t, v in zip(self.model.targets, mae, strict=True)}

    def epoch_terms(self) -> dict[str, float]:
        return {}

    def fit_start(self, loader: Iterable) -> None:
        pass

    def fit_end(self, loader: Iterable, val_loader: Iterable | None = None) -> None:
        pass

    def selection_loss(self, loader: Iterable, val_loader: Iterable | None = None
                       ) -> float | None:
        return None  # the validation loss picks the epoch


def _training_priors(cfg: RegressionConfig, train_vals: np.ndarray, all_vals: np.ndarray,
                     preset: Any, source: str) -> dict[str, dict[str, Any]]:
    """Each target's training prior: the one given (``priors``; every usable value, training
    or held out, must lie in its support) or the one worked out from the training values
    (``describe_training_prior``)."""
    given = dict(cfg.priors or {})
    unknown = [t for t in given if t not in cfg.targets]
    if unknown:
        raise DarklensError(f"--prior for {', '.join(unknown)}, which is not a --target")
    return {t: given_training_prior(t, given[t], all_vals[:, j], source) if t in given
            else describe_training_prior(t, train_vals[:, j], preset)
            for j, t in enumerate(cfg.targets)}


def _support(cfg: RegressionConfig, priors: dict[str, dict[str, Any]]
             ) -> list[list[float]] | None:
    """Each target's [low, high] from its training prior (None if one has no bounded prior;
    the binned and flow heads then cannot be built)."""
    support = [prior_support(priors[t]["prior"]) for t in cfg.targets]
    if all(s is not None for s in support):
        return support
    if cfg.posterior != "gaussian":
        bad = [t for t, s in zip(cfg.targets, support, strict=True) if s is None]
        raise DarklensError(f"--posterior {cfg.posterior} needs a bounded training prior of "
                            f"{', '.join(bad)} ({'; '.join(priors[t]['source'] for t in bad)}); "
                            "give one with --prior NAME=uniform:LOW:HIGH")
    return None


def _train_member(k: int, cfg: RegressionConfig, model: Regressor, train: TensorDataset,
                  val: TensorDataset, out: Path, resume: bool,
                  log: Callable[[str], None]) -> dict[str, Any]:
    """Train one member with the one loop; save its weights; return its summary."""
    seed = cfg.seed + 1000 * k
    if resume and (out / CHECKPOINT).exists():
        log(f"member {k}: resuming from {out / CHECKPOINT}")
    train_cfg = TrainConfig(
        epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay,
        optimizer="adamw", scheduler=cfg.scheduler, patience=cfg.patience, seed=seed,
        out_dir=str(out), resume=resume, device=cfg.device, progress=False,
        max_minutes=cfg.max_minutes / cfg.ensemble if cfg.max_minutes else None)

    def report(epoch: int, row: dict[str, float]) -> None:
        mae = ", ".join(f"{t} {row[f'val_mae_{t}']:.4g}" for t in cfg.targets)
        log(f"member {k} epoch {epoch}/{cfg.epochs}: train {row['train_loss']:.4f}, "
            f"val NLL {row['val_loss']:.4f}, val MAE {mae} ({row['seconds']:.1f}s)")

    result = fit(RegressionTrainable(model, cfg.beta, cfg.augment), train, val, train_cfg,
                 on_epoch_end=report)
    with atomic_path(out / WEIGHTS) as tmp:
        torch.save({key: v.detach().cpu() for key, v in model.state_dict().items()}, tmp)
    stopped = "early" if result.stopped_early else "time" if result.stopped_by_time else "epochs"
    return {"seed": seed, "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
            "best_val_nll": result.best_val_loss, "stopped": stopped, "seconds": result.seconds}


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
    subset = regression_subset(data, cfg.targets, cfg.classes, source, skip_nan=cfg.skip_nan)
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
    train_vals = subset.values[split.train]
    preset = data.attrs.get("preset") if isinstance(data.attrs, dict) else None
    priors = _training_priors(cfg, train_vals, subset.values, preset, source)  # before writing
    support = _support(cfg, priors)
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
                "test_fraction", "posterior", "n_bins")
        diff = [k for k in keys if old.get("config", {}).get(k) != config_dict[k]]
        if diff:
            raise CheckpointError(f"{out}: cannot resume with different {', '.join(diff)}")
    elif not resume and (info_path.exists() or any(out.glob("member-*"))):
        raise DarklensError(f"{out}: already holds a run; use --resume or another --out")

    normaliser = Normaliser.fit(cfg.normalisation, data.images[subset.indices[split.train]]
                                if cfg.normalisation == "standard" else None)
    t_mean, t_std = train_vals.mean(axis=0), train_vals.std(axis=0)

    def tensors(part: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(normaliser(data.images[subset.indices[part]]))
        y = torch.from_numpy((subset.values[part] - t_mean) / np.where(t_std > 0, t_std, 1.0))
        return x, y.float()

    train_set, val_set = TensorDataset(*tensors(split.train)), TensorDataset(*tensors(split.val))
    seed_everything(cfg.seed)

    def new_model() -> Regressor:
        return Regressor(cfg.targets, cfg.arch, dropout=cfg.dropout, norm=cfg.norm,
                         posterior=cfg.posterior, n_bins=cfg.n_bins, support=support)

    try:
        model_cfg = new_model().config
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
        "training_prior": priors,
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
    models = []
    for k in range(cfg.ensemble):
        seed_everything(cfg.seed + 1000 * k)
        model = new_model()
        model.set_standardisation(t_mean, t_std)
        summary = _train_member(k, cfg, model, train_set, val_set, member_dir(out, k), resume,
                                log)
        models.append(model.eval())
        info["members"].append(summary)
        write_json_atomic(info_path, info)
    calibrate_on_validation(models, info, val_set.tensors[0], subset.values[split.val],
                            support, cfg.seed, cfg.recalibrate, out, log)
    write_json_atomic(info_path, info)
    return info


def calibrate_on_validation(models: list[Regressor], info: dict[str, Any],
                            images: torch.Tensor, truth: np.ndarray,
                            support: list[list[float]] | None, seed: int, recalibrate: bool,
                            out: Path, log: Callable[[str], None]) -> None:
    """From one pass over the validation images (normalised, with their truths): the
    effective prior of the raw posteriors (``info["effective_prior"]``, with a support) and,
    with ``recalibrate``, the PIT recalibration (``RUN/recalibration.json``) and the effective
    prior of the recalibrated posteriors (``info["effective_prior_recalibrated"]``)."""
    targets = list(info["targets"])
    grids = None if support is None else np.stack(
        [np.linspace(lo, hi, GRID_POINTS) for lo, hi in support])
    info.pop("effective_prior_recalibrated", None)
    if grids is None and not recalibrate:
        return
    pred = validation_posteriors(models, images, grids, seed)
    if grids is not None:
        info["effective_prior"] = effective_prior(grids, pred.density, targets)
    if recalibrate:
        recal = fit_recalibration(targets, pred, truth, grids, out, log)
        if recal is not None and grids is not None:
            dens = recal.apply_density(grids, pred.density)
            info["effective_prior_recalibrated"] = effective_prior(grids, dens, targets,
                                                                   "recalibrated posterior")


def recalibrate_run(run_dir: str | Path, data: LensData, seed: int = 0,
                    log: Callable[[str], None] = print) -> dict[str, Any]:
    """Fit (again) the PIT recalibration of a finished run on its validation images, e.g. a
    run trained before recalibration existed: ``data`` must be its training data (same
    fingerprint), whose validation split ``RUN/split.json`` names. Updates
    ``regression.json`` (the effective priors) and writes ``recalibration.json``."""
    run = load_regression_run(run_dir)
    if not is_training_data(data, run.info):
        raise DarklensError(f"{run_dir}: these are not its training data (fingerprint); "
                            "the recalibration is fitted on its validation images")
    val = read_split(run_dir)["val"]
    truth = np.stack([np.asarray(data.metadata[t], np.float64)[val] for t in run.targets],
                     axis=1)
    images = torch.from_numpy(run.normaliser(data.images[val]))
    info = run.info
    calibrate_on_validation(run.models, info, images, truth, run.support(), seed, True,
                            Path(run_dir), log)
    write_json_atomic(Path(run_dir) / RUN_JSON, info)
    return info


def validation_posteriors(models: list[Regressor], images: torch.Tensor,
                          grids: np.ndarray | None, seed: int) -> PosteriorPrediction:
    """The ensemble's posteriors (TTA, 256 draws each; densities on ``grids`` if any) of the
    validation images, from a generator seeded with ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    parts = [predict_posterior(models, images[lo:lo + 256], True, 256, grids, gen)
             for lo in range(0, len(images), 256)]
    return PosteriorPrediction(
        np.concatenate([p.mean for p in parts]), np.concatenate([p.var for p in parts]),
        np.concatenate([p.samples for p in parts]),
        None if grids is None else np.concatenate([p.density for p in parts]))


def fit_recalibration(targets: list[str], pred: PosteriorPrediction, truth: np.ndarray,
                      grids: np.ndarray | None, out: Path,
                      log: Callable[[str], None]) -> Recalibration | None:
    """Fit the PIT recalibration on the validation posteriors and save it in ``out``
    (``recalibration.json``), with the validation PIT values' uniformity (KS p) before and
    after; None, saying why, with fewer than ``MIN_LENSES`` validation images."""
    from scipy.stats import kstest

    n = len(truth)
    if n < MIN_LENSES:
        log(f"no recalibration: {n} validation images (at least {MIN_LENSES} needed)")
        return None
    pit = pit_values(pred.samples, truth, grids, pred.density)
    recal = Recalibration.fit(targets, pred.samples, truth, grids, pred.density)
    fits = {t: dict(zip(("a", "b", "p_uniform"), beta_fit(pit[:, j]), strict=True))
            for j, t in enumerate(targets)}
    info = {"fitted_on": f"{n} validation images (ensemble, TTA)", "n_lenses": n,
            "cdf": "marginal densities on the grid" if grids is not None else "the draws",
            "map": "CDF of Beta(a, b) fitted to the PIT values (identity where p_uniform > "
                   f"{UNIFORM_P})", "beta": fits,
            "validation_pit_ks_p_before": {t: float(kstest(pit[:, j], "uniform").pvalue)
                                           for j, t in enumerate(targets)},
            "validation_pit_ks_p_after": {
                t: float(kstest(recal.maps[j](pit[:, j]), "uniform").pvalue)
                for j, t in enumerate(targets)}}
    recal.info = info
    recal.save(out)
    before = ", ".join(f"{v:.2g}" for v in info["validation_pit_ks_p_before"].values())
    log(f"recalibration fitted on {n} validation images (PIT uniformity, KS p: {before} "
        "before)")
    return recal


def effective_prior(grids: np.ndarray, density: np.ndarray, targets: list[str],
                    what: str = "posterior") -> dict[str, dict[str, Any]]:
    """The prior the trained ensemble actually learned, per target: the mean of its posteriors
    (with TTA) over the validation images, which were drawn from the training prior, on each
    target's density grid ``grids`` (T, G) (``density``: (N, T, G)). Population inference
    divides it out instead of the nominal prior: a lens the network says nothing about then
    contributes a flat factor, where the nominal prior would leave the network's small
    systematic tilt, which N lenses multiply into a confident wrong answer."""
    out = {}
    n = len(density)
    for j, t in enumerate(targets):
        g = grids[j]
        dens = np.maximum(density[:, j].mean(axis=0), 1e-12)
        dens /= np.trapezoid(dens, g)
        half = 0.5 * (g[1] - g[0])
        edges = np.concatenate([[g[0] - half], 0.5 * (g[1:] + g[:-1]), [g[-1] + half]])
        prior = TrainingPrior("histogram", low=float(edges[0]), high=float(edges[-1]),
                              edges=tuple(edges.tolist()), density=tuple(dens.tolist()))
        out[t] = {"prior": prior.to_dict(),
                  "source": f"mean {what} (TTA) of the {n} validation images"}
    return out
