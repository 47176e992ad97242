"""`darklens sweep`: an Optuna study over detector and training options (resumable).

    darklens sweep --detector infotheoretic --data DIR \\
        --param beta=loguniform:1e-4:1 --param temperature=uniform:0.05:0.5 \\
        --trials 20 --storage sqlite:///sweep.db

The objective needs no anomaly labels unless ``--labelled-validation DIR`` is given; the output
says which kind it is (see ``darklens.sweep``). The best trial's options are written to
``--best-config`` (default best_config.json) in the form ``darklens train --config FILE`` reads.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from darklens.data.formats import load_dataset
from darklens.errors import DarklensError
from darklens.io import write_json_atomic
from darklens.models.base import list_detectors, require_detector
from darklens.simulate.presets import list_presets
from darklens.sweep import OBJECTIVES, SweepSetup, best_config, objective_kind, parse_param
from darklens.sweep import run_sweep as _run_sweep
from darklens.train.config import parse_config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="hyperparameter search with Optuna (resumable)")
    p.add_argument("--detector", required=True, help=f"one of: {', '.join(list_detectors())}")
    p.add_argument("--param", action="append", default=[], metavar="NAME=KIND:ARGS",
                   help="searched option: uniform:LO:HI, loguniform:LO:HI, int:LO:HI or "
                   "choice:A,B,... (repeat for several)")
    p.add_argument("--trials", type=int, default=10, help="trials to add in this call")
    p.add_argument("--storage", default="sqlite:///sweep.db",
                   help="Optuna storage URL (sqlite:///FILE, postgresql://...)")
    p.add_argument("--study-name", help="default: sweep-<detector>")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="training data set (its normal images are trained on)")
    src.add_argument("--preset", choices=list_presets(),
                     help="simulate --n-per-class images per class of this preset in memory")
    p.add_argument("--n-per-class", type=int, default=300)
    p.add_argument("--labelled-validation", metavar="DIR",
                   help="labelled validation set: makes the objective use anomaly labels")
    p.add_argument("--config", help="fixed options (the `darklens train --config` format)")
    p.add_argument("--epochs", type=int, help="epochs per trial (default: the detector's)")
    p.add_argument("--max-minutes", type=float, help="training time limit per trial")
    p.add_argument("--seed", type=int, default=0, help="split, weights and sampler seed")
    p.add_argument("--best-config", default="best_config.json",
                   help="where to write the best trial's options (JSON)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    require_detector(args.detector)
    if not args.param:
        raise DarklensError("give at least one --param NAME=KIND:ARGS")
    if args.trials < 1:
        raise DarklensError("--trials must be at least 1")
    params = [parse_param(t) for t in args.param]
    det_fixed, train_fixed = parse_config(args.config)
    if args.data:
        data = load_dataset(args.data)
    else:
        from darklens.simulate.simulator import simulate_dataset

        print(f"simulating {args.n_per_class} images per class of {args.preset} (seed "
              f"{args.seed})", flush=True)
        data = simulate_dataset(args.preset, args.n_per_class, seed=args.seed)
    labelled = load_dataset(args.labelled_validation) if args.labelled_validation else None
    kind = objective_kind(args.detector, labelled is not None, int(data.images.shape[-1]))
    direction, meaning = OBJECTIVES[kind]
    study_name = args.study_name or f"sweep-{args.detector}"
    print(f"objective: {kind} ({direction}); {meaning}", flush=True)
    setup = SweepSetup(detector=args.detector, data=data, params=params,
                       fixed={"detector": det_fixed, "train": train_fixed}, objective=kind,
                       seed=args.seed, epochs=args.epochs, max_minutes=args.max_minutes,
                       labelled=labelled, device=args.device)
    study = _run_sweep(setup, args.storage, study_name, args.trials, sampler_seed=args.seed,
                       log=lambda m: print(m, flush=True))
    try:
        best = study.best_trial
    except ValueError as err:
        raise DarklensError(f"study {study_name!r}: no trial finished") from err
    config = best_config(study, setup.fixed)
    write_json_atomic(Path(args.best_config), config)
    print(f"best trial {best.number}: {kind} {best.value:.4f} "
          f"({'label-free' if kind != 'labelled_auroc' else 'uses anomaly labels'})")
    print(json.dumps(config))
    print(f"wrote {args.best_config}; train with: darklens train --detector {args.detector} "
          f"--config {args.best_config} ...")
    return 0
