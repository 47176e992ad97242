"""`darklens train`: train a detector on the normal images of a data set (or a simulator stream).

The run directory RUN receives checkpoint.pt and losses.csv every epoch, then config.json
(detector, training options, data fingerprint and split), weights.pt and normal_stats.json
(scores of the normal validation images). ``--resume`` continues an interrupted run in RUN.

``--views native`` (a detector with ``accepts_native_views``, i.e. infotheoretic, on the
simulator stream ``--preset``): every training and validation lens is rendered ``--n-views``
times with independent noise (``--view-source new``: also a new source behind the lens), and
the positive pairs are two different renderings instead of two augmentations of one image.
The detector option ``augment`` then defaults to ``none``, as in the benchmark's native-view
rows (demo, one seed: ``noise`` on top gave the same AUROC, 0.974). The choice is recorded
under ``views`` in config.json; scoring and evaluation use single images as always.

Data-parallel: ``torchrun --standalone --nproc_per_node=N -m darklens.cli train ...`` trains
with DDP (gloo on CPU, nccl on GPU); rank 0 writes the run directory.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from darklens.data.dataset import NORMALISATIONS, ImageDataset
from darklens.data.formats import load_dataset
from darklens.data.shards import DEFAULT_CACHE_MB, ShardDataset, is_shard_path
from darklens.errors import DarklensError
from darklens.evaluate.scoring import score_images
from darklens.fit.instrument import instrument_for_data
from darklens.models.base import create_detector, detector_class, list_detectors
from darklens.models.persistence import save_run
from darklens.train import distributed as dd
from darklens.train.data import SimulatorStream, detection_data, fingerprint, simulator_views
from darklens.train.loop import TrainConfig, fit
from darklens.train.rng import seed_everything

TRAIN_KEYS = {f.name for f in fields(TrainConfig)}
VIEW_MODES = ("augment", "native")
DEFAULT_N_VIEWS = 4  # the benchmark's native-view rows (demo: AUROC 0.974 against 0.938)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train an anomaly detector on normal images")
    p.add_argument("--detector", required=True, help=f"one of: {', '.join(list_detectors())}")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="data set (HDF5 shards, DeepLense class folders)")
    src.add_argument("--preset", help="train on an endless stream from this simulator preset")
    p.add_argument("--normal", default="no_sub", help="the normal class (default no_sub)")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--config", help="JSON object (or a .json file): detector options and "
                   "training options, flat or as {\"detector\": {...}, \"train\": {...}}")
    p.add_argument("--normalise", default="minmax", choices=NORMALISATIONS)
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--test-fraction", type=float, default=0.2,
                   help="normal images held out for `darklens evaluate`")
    p.add_argument("--steps-per-epoch", type=int, default=50, help="with --preset")
    p.add_argument("--val-size", type=int, default=200, help="validation images with --preset")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--labelled-anomalies", metavar="DIR",
                   help="labelled anomalous images for a semi-supervised detector "
                   "(infotheoretic); every class other than --normal counts as anomalous")
    p.add_argument("--n-labelled", type=int, default=10,
                   help="labelled anomalies used per anomaly class (default 10)")
    p.add_argument("--shard-cache-mb", type=float, default=DEFAULT_CACHE_MB,
                   help="HDF5 shards are streamed, not loaded: MiB of image blocks kept in "
                   f"memory (default {DEFAULT_CACHE_MB:g}; per DataLoader worker)")
    p.add_argument("--views", choices=VIEW_MODES, default="augment",
                   help="positive pairs of a view-based detector (infotheoretic): 'augment' "
                   "(two augmentations of each image, default) or 'native' (the same simulated "
                   "lens rendered --n-views times with independent noise; needs --preset)")
    p.add_argument("--n-views", type=int,
                   help=f"renderings per lens with --views native (default {DEFAULT_N_VIEWS})")
    p.add_argument("--view-source", choices=("same", "new"),
                   help="with --views native: 'new' puts a newly drawn source behind the lens "
                   "in every rendering after the first (default same)")
    p.add_argument("--instrument", metavar="KEY=VALUE,...",
                   help="for a detector that fits the smooth lens (residual-chi2): "
                   "pixel_scale=ARCSEC,psf_fwhm=ARCSEC|fit[,supersample=N][,noise=SIGMA]"
                   "[,lens_light=0|1]; default: the preset's own instrument for simulator data, "
                   "else a 0.08 arcsec pixel and a PSF fitted per image")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def parse_config(text: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``--config`` -> (detector options, training options)."""
    if not text:
        return {}, {}
    path = Path(text)
    try:
        raw = json.loads(path.read_text() if path.suffix == ".json" and path.is_file() else text)
    except json.JSONDecodeError as err:
        raise DarklensError(f"--config: not valid JSON ({err})") from err
    if not isinstance(raw, dict):
        raise DarklensError("--config must be a JSON object")
    det = dict(raw.pop("detector", {}) or {})
    train = dict(raw.pop("train", {}) or {})
    for key, value in raw.items():  # flat keys: training option if TrainConfig knows it
        (train if key in TRAIN_KEYS else det)[key] = value
    return det, train


def run(args: argparse.Namespace) -> int:
    if args.detector not in list_detectors():
        raise DarklensError(f"unknown detector {args.detector!r}; "
                            f"known: {', '.join(list_detectors())}")
    det_opts, train_opts = parse_config(args.config)
    views = view_options(args)
    if views["mode"] == "native":
        det_opts.setdefault("augment", "none")
    dd.init_from_env("nccl" if args.device.startswith("cuda") else "gloo")
    out = Path(args.out)
    if (out / "config.json").exists() and not args.resume:
        raise DarklensError(f"{out} already holds a finished run; use --resume or another --out")

    extra: dict[str, Any] = {"normal": args.normal, "seed": args.seed}
    fit_val: Any = None  # what the loop validates on, when not the plain val_set
    if args.data:
        # HDF5 shards are streamed (bounded memory); other formats are loaded whole.
        data = ShardDataset.from_path(args.data, args.shard_cache_mb) \
            if is_shard_path(args.data) else load_dataset(args.data)
        det_data = detection_data(data, args.normal, args.seed, args.val_fraction,
                                  args.test_fraction, args.normalise)
        train_set, val_set, normaliser = det_data.train, det_data.val, det_data.normaliser
        size, channels = data.images.shape[-1], data.images.shape[1]
        extra["data"] = {"path": str(Path(args.data).resolve()), "n": len(data),
                         "fingerprint": fingerprint(data), "class_names": list(data.class_names),
                         "streamed": isinstance(data, ShardDataset)}
        extra["split"] = {"seed": args.seed, "val_fraction": args.val_fraction,
                          "test_fraction": args.test_fraction,
                          "n_train": len(det_data.split.train),
                          "n_val_normal": len(det_data.val), "n_test": len(det_data.split.test)}
    else:
        from darklens.data.dataset import Normaliser
        from darklens.simulate.simulator import simulate_dataset

        normaliser = Normaliser.fit(args.normalise, None) if args.normalise != "standard" \
            else None
        if normaliser is None:
            raise DarklensError("--normalise standard needs --data (it is fitted on images)")
        val_data = simulate_dataset(args.preset, args.val_size, seed=args.seed + 1,
                                    classes=(args.normal,))
        val_set = ImageDataset(val_data, None, normaliser)
        batch = int(args.batch_size or train_opts.get("batch_size")
                    or detector_class(args.detector).train_defaults.get("batch_size")
                    or TrainConfig.batch_size)  # as the loop will use: epochs never overlap
        n_views = views.get("n_views", 1)
        new_source = views.get("source") == "new"
        train_set = SimulatorStream(args.preset, args.seed, args.steps_per_epoch * batch,
                                    args.normal, normaliser, chunk=min(64, batch),
                                    n_views=n_views, new_source=new_source)
        if n_views > 1:  # validation loss on native pairs too; view 0 is val_data's image
            fit_val = simulator_views(args.preset, args.val_size, args.seed + 1, n_views,
                                      args.normal, normaliser, new_source)
        train_opts.setdefault("steps_per_epoch", args.steps_per_epoch)
        size, channels = val_data.images.shape[-1], val_data.images.shape[1]
        extra["data"] = {"stream": args.preset, "stream_seed": args.seed,
                         "val_seed": args.seed + 1, "n_val": args.val_size}
    extra["normaliser"] = normaliser.to_dict()
    extra["views"] = views

    cls = detector_class(args.detector)
    if getattr(cls, "uses_instrument", False):
        source = data if args.data else val_data
        inst = instrument_for_data(args.instrument, source, int(size))
        det_opts["instrument"] = inst.to_dict()
        extra["instrument"] = inst.to_dict()
        preset = getattr(source, "attrs", {}).get("preset")
        if isinstance(preset, dict):  # simulator data: its own prior trains the fit's guess
            det_opts.setdefault("prior", preset)
        det_opts.setdefault("seed", args.seed)
    elif args.instrument:
        raise DarklensError(f"--instrument: detector {args.detector} does not fit the smooth "
                            "lens (use --detector residual-chi2)")
    seed_everything(args.seed)
    try:
        detector = create_detector(args.detector, image_size=int(size), in_channels=int(channels),
                                   **det_opts)
    except (TypeError, ValueError) as err:
        raise DarklensError(f"bad options for detector {args.detector}: {err}") from err
    if args.labelled_anomalies:
        extra["labelled_anomalies"] = _add_labelled(detector, args, normaliser)
    values = {k: v for k, v in detector.train_defaults.items() if k in TRAIN_KEYS}
    values.update(train_opts)
    cli = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr}
    values.update({k: v for k, v in cli.items() if v is not None})
    values.update(seed=args.seed, out_dir=str(out), resume=args.resume, device=args.device,
                  progress=not args.no_progress)
    cfg = TrainConfig.from_dict(values)

    start = time.perf_counter()
    result = fit(detector, train_set, val_set if fit_val is None else fit_val, cfg)
    if dd.rank() != 0:
        dd.shutdown()
        return 0
    val_scores = _score_dataset(detector, val_set, args.device)
    extra["train"] = asdict(cfg)
    extra["world_size"] = dd.world_size()
    extra["result"] = {"epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
                       "best_val_loss": result.best_val_loss,
                       "stopped_early": result.stopped_early, "seconds": result.seconds}
    if hasattr(detector, "diagnostics"):  # e.g. the infotheoretic collapse watch
        extra["diagnostics"] = detector.diagnostics()
    save_run(out, detector, normal_scores=val_scores, extra=extra)
    dd.shutdown()
    took = time.perf_counter() - start
    best = "" if result.best_val_loss is None else \
        f", best validation loss {result.best_val_loss:.4g} (epoch {result.best_epoch})"
    print(f"trained {args.detector} for {result.epochs_run} epoch(s) in {took:.1f} s{best}; "
          f"run saved in {out}")
    return 0


def view_options(args: argparse.Namespace) -> dict[str, Any]:
    """``--views`` and its options, checked: what config.json records under ``views``."""
    native = args.views == "native"
    if not native:
        if args.n_views is not None or args.view_source is not None:
            raise DarklensError("--n-views and --view-source need --views native")
        return {"mode": "augment"}
    if args.data:
        raise DarklensError("--views native needs the simulator stream (--preset PRESET); "
                            f"images on disk ({args.data}) hold one noise draw each")
    if not detector_class(args.detector).accepts_native_views:
        raise DarklensError(f"--views native: detector {args.detector} does not train on "
                            "views (use --detector infotheoretic)")
    n_views = DEFAULT_N_VIEWS if args.n_views is None else args.n_views
    if n_views < 2:
        raise DarklensError(f"--n-views must be at least 2 with --views native, got {n_views}")
    return {"mode": "native", "n_views": n_views, "source": args.view_source or "same"}


def _add_labelled(detector: Any, args: argparse.Namespace, normaliser: Any) -> dict[str, Any]:
    """Give a semi-supervised detector its labelled anomalies (normalised like the training set)."""
    if not hasattr(detector, "set_labelled_anomalies"):
        raise DarklensError(f"--labelled-anomalies: detector {args.detector} does not use "
                            "labelled anomalies (use --detector infotheoretic)")
    from darklens.models.infotheoretic import select_labelled

    data = load_dataset(args.labelled_anomalies)
    picked = select_labelled(data, args.n_labelled, seed=args.seed, normal=args.normal)
    detector.set_labelled_anomalies(torch.as_tensor(normaliser(picked.numpy())))
    return {"path": str(Path(args.labelled_anomalies).resolve()),
            "n_per_class": args.n_labelled, "n": int(picked.shape[0])}


def _score_dataset(detector: Any, dataset: ImageDataset, device: str,
                   batch_size: int = 256) -> np.ndarray:
    """Scores of every image, a batch at a time (never all images in memory at once)."""
    loader = DataLoader(dataset, batch_size=batch_size)
    parts = [score_images(detector, batch[0], batch_size, device) for batch in loader]
    return np.concatenate(parts) if parts else np.zeros(0)
