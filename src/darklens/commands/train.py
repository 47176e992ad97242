"""`darklens train`: train a detector on the normal images of a data set (or a simulator stream).

The run directory RUN receives checkpoint.pt and losses.csv every epoch, then config.json
(detector, training options, data fingerprint and split), weights.pt and normal_stats.json
(scores of the normal validation images) and calibration.json (scores of held-out calibration
normals: ``--cal-fraction`` of the normal images, taken out of the training part and never
trained or validated on; with ``--preset``, ``--cal-size`` fresh simulations), from which
``darklens score`` computes conformal p-values. ``--resume`` continues an interrupted run in RUN.

``--views native`` (a detector with ``accepts_native_views``, i.e. infotheoretic, on the
simulator stream ``--preset``): every training and validation lens is rendered ``--n-views``
times with independent noise (``--view-source new``: also a new source behind the lens), and
the positive pairs are two different renderings instead of two augmentations of one image.
The detector option ``augment`` then defaults to ``none``, as in the benchmark's native-view
rows (demo, one seed: ``noise`` on top gave the same AUROC, 0.974). The choice is recorded
under ``views`` in config.json; scoring and evaluation use single images as always.

``--input residual`` (any learned detector; not residual-chi2, which fits raw images itself):
the detector learns on the normalised residual maps of the smooth-lens fit instead of the
images (:mod:`darklens.fit.residual_input`). The fitter's initial-guess network is trained on
simulations first (the data's preset for simulator data, else a generic prior of the
instrument, ``--instrument``), the training and validation normals are fitted once, and the
detector trains on their maps, clipped to +-20 sigma, with normalisation ``none`` by default
(they are in noise units already). RUN/residual_input.pt holds the guess network and
config.json's ``input`` the rest, so that ``darklens evaluate`` and ``darklens score`` apply the
same transform. The fingerprint recorded is the original data's. Needs ``--data``; HDF5 shards
are then loaded whole. A detector that takes pseudo-anomalies (infotheoretic) also gets one
per training and validation normal, the normal with random point masses added through its own
fitted lens and fitted again (:mod:`darklens.fit.pseudo_anomalies`, works on foreign data):
the validation ones choose its score and epoch without labels, the training ones feed its
semi-supervised term; ``--input-options '{"pseudo_anomalies": false}'`` turns them off. The
detector's ``residual_defaults`` (infotheoretic: entropy bound on the backbone, beta 1) apply
unless ``--config`` sets those keys.

Data-parallel: ``torchrun --standalone --nproc_per_node=N -m darklens.cli train ...`` trains
with DDP (gloo on CPU, nccl on GPU); rank 0 writes the run directory.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from darklens.data.dataset import NORMALISATIONS, ImageDataset, Normaliser
from darklens.data.formats import load_dataset
from darklens.data.lensdata import LensData
from darklens.data.shards import DEFAULT_CACHE_MB, ShardDataset, is_shard_path
from darklens.errors import DarklensError
from darklens.fit.instrument import instrument_for_data
from darklens.fit.residual_input import OPTION_KEYS, ResidualInput
from darklens.models.base import detector_class, list_detectors, require_detector
from darklens.progress import is_terminal
from darklens.train import distributed as dd
from darklens.train.config import parse_config
from darklens.train.data import SimulatorStream, detection_split, simulator_views
from darklens.train.detector_run import (
    DetectorSets,
    data_record,
    instrument_options,
    split_sets,
    train_detector,
)
from darklens.train.loop import TrainConfig

VIEW_MODES = ("augment", "native")
INPUTS = ("raw", "residual")
DEFAULT_N_VIEWS = 4  # the benchmark's native-view rows (demo: AUROC 0.974 against 0.938)
PSEUDO_SEED_OFFSET = 5  # the fitted-lens pseudo-anomalies' perturbers: seed + this


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
    p.add_argument("--normalise", choices=NORMALISATIONS,
                   help="image normalisation (default minmax; none with --input residual)")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--test-fraction", type=float, default=0.2,
                   help="normal images held out for `darklens evaluate`")
    p.add_argument("--cal-fraction", type=float, default=0.1,
                   help="normal images held out of training as calibration normals, whose "
                   "scores give `darklens score` its p-values (default 0.1; 0: none)")
    p.add_argument("--cal-size", type=int, default=200,
                   help="calibration images with --preset (fresh simulations; default 200)")
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
                   f"memory (default {DEFAULT_CACHE_MB:g}; per DataLoader worker; with "
                   "--input residual shards are loaded whole)")
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
                   "else a 0.08 arcsec pixel and a PSF fitted per image; also the instrument "
                   "of --input residual")
    p.add_argument("--input", choices=INPUTS, default="raw",
                   help="what the detector learns on: 'raw' images (default) or 'residual': "
                   "the normalised residual maps (data - model) / sigma of the smooth-lens fit, "
                   "clipped to +-20 sigma (needs --data; HDF5 shards are then loaded whole, "
                   "not streamed); evaluate and score apply the same transform")
    p.add_argument("--input-options", metavar="JSON",
                   help="with --input residual: JSON object with guess_images (simulated "
                   "lenses that train the fitter's initial guess, default 4000; 0: none), "
                   "guess_epochs (default 8), clip (default 20), fit_options (FitOptions "
                   "fields, e.g. {\"iterations\": 10}) and pseudo_anomalies (default true: a "
                   "detector that takes pseudo-anomalies, infotheoretic, gets one per "
                   "training normal, point masses added through its fitted lens)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    require_detector(args.detector)
    det_opts, train_opts = parse_config(args.config)
    input_opts = input_options(args)
    views = view_options(args)
    if views["mode"] == "native":
        det_opts.setdefault("augment", "none")
    dd.init_from_env("nccl" if args.device.startswith("cuda") else "gloo")
    out = Path(args.out)
    if (out / "config.json").exists() and not args.resume:
        raise DarklensError(f"{out} already holds a finished run; use --resume or another --out")

    residual = args.input == "residual"
    if residual:  # the detector's own defaults for residual maps, unless the config sets them
        for key, value in detector_class(args.detector).residual_defaults.items():
            det_opts.setdefault(key, value)
    normalise = args.normalise or ("none" if residual else "minmax")
    extra: dict[str, Any] = {"views": views, "input": {"kind": "raw"}}
    transform: ResidualInput | None = None
    pseudo: dict[str, Any] | None = None
    if args.data:
        # HDF5 shards are streamed (bounded memory); other formats are loaded whole, and so
        # are shards for --input residual (its maps are computed once, in memory).
        data = ShardDataset.from_path(args.data, args.shard_cache_mb) \
            if is_shard_path(args.data) and not residual else load_dataset(args.data)
        record = data_record(data, path=str(Path(args.data).resolve()))
        if residual:  # the record above stays the original data's
            data, transform, extra["input"], pseudo = residual_data(
                args, data, int(data.images.shape[-1]), input_opts)
        sets = split_sets(data, args.normal, args.seed, args.val_fraction, args.test_fraction,
                          args.cal_fraction, normalise, cal_name="--cal-fraction")
        if args.cal_fraction > 0 and sets.cal is None:
            print(f"darklens train: warning: --cal-fraction {args.cal_fraction} of "
                  f"{sets.n_normal} normal images is none: no calibration normals, so "
                  "`darklens score` will give no p-values", file=sys.stderr)
        source: Any = data
    else:
        sets, source = stream_sets(args, normalise, views, train_opts)
        record = {"stream": args.preset, "stream_seed": args.seed, "val_seed": args.seed + 1,
                  "n_val": args.val_size, "cal_seed": args.seed + 2,
                  "n_cal": max(0, args.cal_size)}

    inst = instrument_options(args.detector, det_opts, args.instrument, source,
                              sets.image_size, args.seed)
    if inst is not None:
        extra["instrument"] = inst
    elif args.instrument and not residual:
        raise DarklensError(f"--instrument: detector {args.detector} does not fit the smooth "
                            "lens (use --detector residual-chi2, or --input residual)")
    if transform is not None and dd.rank() == 0:
        # saved before training: config.json, written last, marks the run finished
        extra["input"] = {**extra["input"], **transform.save(out)}

    def prepare(detector: Any, values: dict[str, Any]) -> None:
        if args.labelled_anomalies:
            extra["labelled_anomalies"] = _add_labelled(detector, args, sets.normaliser,
                                                        transform)
        if pseudo is not None:
            extra["pseudo_anomalies"] = _add_fitted_pseudo(detector, pseudo, sets)

    start = time.perf_counter()
    run = train_detector(args.detector, det_opts, train_opts, sets, out_dir=out,
                         seed=args.seed, normal=args.normal, data=record, extra=extra,
                         epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         device=args.device, progress=not args.no_progress,
                         resume=args.resume, prepare=prepare, source=source)
    is_main = dd.rank() == 0
    dd.shutdown()
    if not is_main:
        return 0
    result = run.result
    took = time.perf_counter() - start
    chosen_by = "label-free selection loss (minus the pseudo-AUROC)" \
        if result.history and "selection_loss" in result.history[-1] else "validation loss"
    best = "" if result.best_val_loss is None else \
        f", best {chosen_by} {result.best_val_loss:.4g} (epoch {result.best_epoch})"
    print(f"trained {args.detector} for {result.epochs_run} epoch(s) in {took:.1f} s{best}; "
          f"run saved in {out}")
    return 0


def stream_sets(args: argparse.Namespace, normalise: str, views: dict[str, Any],
                train_opts: dict[str, Any]) -> tuple[DetectorSets, LensData]:
    """``--preset``: an endless training stream from the simulator, fresh validation (and
    calibration) normals from their own seeds; and the validation data (its preset)."""
    from darklens.simulate.simulator import simulate_dataset

    if normalise == "standard":
        raise DarklensError("--normalise standard needs --data (it is fitted on images)")
    normaliser = Normaliser.fit(normalise, None)
    val_data = simulate_dataset(args.preset, args.val_size, seed=args.seed + 1,
                                classes=(args.normal,))
    cal_set = None
    if args.cal_size > 0:  # fresh normals from their own seed, never trained on
        cal_set = ImageDataset(simulate_dataset(args.preset, args.cal_size, seed=args.seed + 2,
                                                classes=(args.normal,)), None, normaliser)
    batch = int(args.batch_size or train_opts.get("batch_size")
                or detector_class(args.detector).train_defaults.get("batch_size")
                or TrainConfig.batch_size)  # as the loop will use: epochs never overlap
    n_views = views.get("n_views", 1)
    new_source = views.get("source") == "new"
    train_set = SimulatorStream(args.preset, args.seed, args.steps_per_epoch * batch,
                                args.normal, normaliser, chunk=min(64, batch),
                                n_views=n_views, new_source=new_source)
    fit_val = None
    if n_views > 1:  # validation loss on native pairs too; view 0 is val_data's image
        fit_val = simulator_views(args.preset, args.val_size, args.seed + 1, n_views,
                                  args.normal, normaliser, new_source)
    train_opts.setdefault("steps_per_epoch", args.steps_per_epoch)
    shape = val_data.images.shape
    return DetectorSets(train_set, ImageDataset(val_data, None, normaliser), cal_set,
                        normaliser, int(shape[-1]), int(shape[1]), fit_val=fit_val), val_data


def input_options(args: argparse.Namespace) -> dict[str, Any]:
    """``--input`` and ``--input-options``, checked before anything is loaded or trained."""
    if args.input == "raw":
        if args.input_options:
            raise DarklensError("--input-options needs --input residual")
        return {}
    if not args.data:
        raise DarklensError("--input residual needs --data: the residual maps are fitted once "
                            "from images on disk, not from the simulator stream --preset")
    if getattr(detector_class(args.detector), "uses_instrument", False):
        raise DarklensError(f"--input residual: detector {args.detector} fits the smooth lens "
                            "to the raw images itself; use --input raw (the default)")
    if not args.input_options:
        return {}
    try:
        opts = json.loads(args.input_options)
    except json.JSONDecodeError as err:
        raise DarklensError(f"--input-options: not valid JSON ({err})") from err
    if not isinstance(opts, dict):
        raise DarklensError("--input-options must be a JSON object")
    unknown = set(opts) - set(OPTION_KEYS)
    if unknown:
        raise DarklensError(f"--input-options: unknown keys {sorted(unknown)}; "
                            f"known: {', '.join(OPTION_KEYS)}")
    if "fit_options" in opts and not isinstance(opts["fit_options"], dict):
        raise DarklensError("--input-options: fit_options must be a JSON object")
    for key in ("guess_images", "guess_epochs"):
        if key in opts and (not isinstance(opts[key], int) or isinstance(opts[key], bool)):
            raise DarklensError(f"--input-options: {key} must be an integer")
    if "clip" in opts and not (isinstance(opts["clip"], (int, float)) and opts["clip"] > 0):
        raise DarklensError("--input-options: clip must be a number > 0")
    if "pseudo_anomalies" in opts and not isinstance(opts["pseudo_anomalies"], bool):
        raise DarklensError("--input-options: pseudo_anomalies must be true or false")
    return opts


def residual_data(args: argparse.Namespace, data: Any, size: int, opts: dict[str, Any]
                  ) -> tuple[LensData, ResidualInput, dict[str, Any], dict[str, Any] | None]:
    """``--input residual``: train the fitter's guess, fit the images training uses (the
    normal training and validation images of the run's split; evaluate fits the test part),
    and return data of the same length and labels whose images are their residual maps (NaN
    for the images not fitted here: nothing reads them), the transform, and its record.

    For a detector that takes pseudo-anomalies (unless ``pseudo_anomalies`` is false in
    ``opts``), each of those normals also gets a pseudo-anomaly: point masses added through
    its own fitted lens, fitted again (:meth:`ResidualInput.with_pseudo`). The last item
    returned is then ``{"maps": (N, 1, H, W) residual maps of them (NaN elsewhere), "seed"}``,
    else None; ``_add_fitted_pseudo`` hands them to the detector."""
    channels = int(data.images.shape[1])
    if channels != 1:
        raise DarklensError(f"--input residual fits one-channel images; {args.data} has "
                            f"{channels} channels")
    # the split first: a bad --normal fails before minutes of training
    split = detection_split(data, args.normal, args.seed, args.val_fraction, args.test_fraction)
    normal_id = data.class_names.index(args.normal)
    need = np.union1d(split.train, split.val[data.labels[split.val] == normal_id])
    inst = instrument_for_data(args.instrument, data, size)
    preset = getattr(data, "attrs", {}).get("preset")
    start = time.perf_counter()
    transform = ResidualInput.prepare(
        inst, preset if isinstance(preset, dict) else None, seed=args.seed,
        guess_images=int(opts.get("guess_images", 4000)),
        guess_epochs=int(opts.get("guess_epochs", 8)), options=opts.get("fit_options"),
        clip=float(opts.get("clip", 20.0)))
    guess_s = time.perf_counter() - start
    start = time.perf_counter()
    show = not args.no_progress and is_terminal()
    make_pseudo = bool(opts.get("pseudo_anomalies", True)) and \
        detector_class(args.detector).accepts_pseudo_anomalies
    pseudo: dict[str, Any] | None = None
    if make_pseudo:
        pseudo_seed = args.seed + PSEUDO_SEED_OFFSET
        maps, pseudo_maps = transform.with_pseudo(data.images[need], pseudo_seed, progress=show)
        pseudo = {"maps": np.full(data.images.shape, np.nan, dtype=np.float32),
                  "seed": pseudo_seed}
        pseudo["maps"][need[transform.fitted]] = pseudo_maps[transform.fitted]
    else:
        maps = transform(data.images[need], progress=show)
    fit_s = time.perf_counter() - start
    not_fitted = int((~transform.fitted).sum())
    images = np.full(data.images.shape, np.nan, dtype=np.float32)
    images[need] = maps
    guess = "no initial-guess network" if transform.guess is None else \
        f"initial guess trained on {opts.get('guess_images', 4000)} simulated lenses " \
        f"(prior {transform.record.get('prior')}) in {guess_s:.1f} s"
    also = " and to a pseudo-anomaly of each" if pseudo is not None else ""
    print(f"residual input ({inst.source} instrument, {guess}): fitted the smooth lens to "
          f"{len(need)} of {len(data)} images (the training and validation normals){also} in "
          f"{fit_s:.1f} s")
    if not_fitted:
        print(f"darklens train: warning: {not_fitted} training image(s) could not be fitted "
              "(NaN or infinite pixels); their residual maps are zero", file=sys.stderr)
    record = {"kind": "residual", "n_fitted": int(len(need)), "n_not_fitted": not_fitted,
              "guess_seconds": guess_s, "fit_seconds": fit_s}
    out = LensData(images=images, labels=np.asarray(data.labels), class_names=data.class_names,
                   metadata={}, attrs=dict(getattr(data, "attrs", {})))
    return out, transform, record, pseudo


def _add_fitted_pseudo(detector: Any, pseudo: dict[str, Any],
                       sets: DetectorSets) -> dict[str, Any]:
    """Give the detector the fitted-lens pseudo-anomalies of ``residual_data``, normalised like
    the training maps: those of its validation normals for the label-free choice of score and
    epoch (``set_pseudo_anomalies``), those of its training images (never the calibration
    normals, whose scores must stay exchangeable with new normals') for the semi-supervised
    term, after any labelled anomalies. Returns config.json's record of them."""
    maps = pseudo["maps"]

    def rows(dataset: Any) -> np.ndarray:
        idx = np.asarray(getattr(dataset, "indices", []), dtype=int)
        return idx[np.isfinite(maps[idx]).all((1, 2, 3))] if idx.size else idx

    val, train = rows(sets.val), rows(sets.train)
    if val.size:
        detector.set_pseudo_anomalies(torch.as_tensor(sets.normaliser(maps[val])))
    pushed = torch.as_tensor(sets.normaliser(maps[train]))
    if train.size:
        labelled = detector.labelled if getattr(detector, "labelled", None) is not None \
            and detector.labelled.dim() == 4 else None
        detector.set_labelled_anomalies(pushed if labelled is None else
                                        torch.cat([labelled.cpu(), pushed]))
    return {"kind": "fitted lens + point masses", "pseudo_seed": int(pseudo["seed"]),
            "n_selection": int(val.size), "n_semi_supervised": int(train.size)}


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


def _add_labelled(detector: Any, args: argparse.Namespace, normaliser: Any,
                  transform: ResidualInput | None = None) -> dict[str, Any]:
    """Give a semi-supervised detector its labelled anomalies (transformed and normalised like
    the training set)."""
    if not detector.accepts_labelled_anomalies:
        raise DarklensError(f"--labelled-anomalies: detector {args.detector} does not use "
                            "labelled anomalies (use --detector infotheoretic)")
    from darklens.models.infotheoretic import select_labelled

    data = load_dataset(args.labelled_anomalies)
    picked = select_labelled(data, args.n_labelled, seed=args.seed, normal=args.normal).numpy()
    if transform is not None:
        picked = transform(picked)
    detector.set_labelled_anomalies(torch.as_tensor(normaliser(picked)))
    return {"path": str(Path(args.labelled_anomalies).resolve()),
            "n_per_class": args.n_labelled, "n": int(picked.shape[0])}

