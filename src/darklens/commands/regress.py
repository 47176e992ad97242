"""`darklens regress train | evaluate | predict`: regression of dark-matter properties.

- ``train --target NAME[,NAME] --data DIR --out RUN``: trains a ResNet with a Gaussian head (or
  a deep ensemble) on the images that carry the targets; holds out a deterministic test split
  recorded in ``RUN/split.json``.
- ``evaluate RUN --data DIR``: predicts (with 8-fold dihedral test-time augmentation) and
  writes ``RUN/metrics.json`` (per target mae, rmse, r2, bias, coverage_68, coverage_95; for a
  single target also at the top level), ``RUN/predictions.csv`` and figures. If DIR holds the
  training data (same image fingerprint), only the held-out test images are scored; any
  other DIR is scored in full (it must then not contain training images: simulate it with
  another seed).
- ``predict RUN FILES...``: predictions and uncertainties for any images, as CSV.
- ``population RUN --data DIR [--target NAME] [--model mean|shared] [--out FILE.json]``:
  predicts every image of DIR (of the run's classes; its held-out test split if DIR is the
  training data) and combines them into one population quantity with its uncertainty,
  dividing out the training prior (``darklens.evaluate.run_population``); prints N, the
  estimate +- sigma and, where DIR carries the labels, the true mean and the pull.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

import numpy as np

from darklens.data.formats import load_dataset
from darklens.data.targets import regression_subset
from darklens.errors import DarklensError
from darklens.evaluate.regression_metrics import metrics_per_target
from darklens.evaluate.run_population import MODELS, population_of_run
from darklens.io import write_json_atomic, write_text_atomic
from darklens.models.regression_persistence import (
    is_training_data,
    load_regression_run,
    predict_images,
    read_split,
)
from darklens.models.regressor import ARCHS
from darklens.models.training_prior import parse_prior
from darklens.report.regression_figures import regression_figures
from darklens.train.regression import RegressionConfig, train_regression

METRICS_JSON = "metrics.json"
PREDICTIONS_CSV = "predictions.csv"
METRIC_KEYS = ("mae", "rmse", "r2", "bias", "coverage_68", "coverage_95")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("regress", help="regress dark-matter properties with uncertainties")
    rsub = p.add_subparsers(dest="regress_command", required=True)

    t = rsub.add_parser("train", help="train a regressor (or deep ensemble)")
    t.add_argument("--target", required=True, help="metadata column(s), comma-separated")
    t.add_argument("--data", required=True, help="HDF5 shards or DeepLense folder + labels.csv")
    t.add_argument("--out", required=True, help="run directory")
    t.add_argument("--epochs", type=int, default=30)
    t.add_argument("--arch", choices=list(ARCHS), default="small")
    t.add_argument("--norm", choices=("batch", "group"), default="batch",
                   help="normalisation layers (group: no running statistics)")
    t.add_argument("--ensemble", type=int, default=1, help="deep-ensemble members")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--weight-decay", type=float, default=1e-4)
    t.add_argument("--patience", type=int, default=10, help="early stopping (0: off)")
    t.add_argument("--beta", type=float, default=0.0, help="beta-NLL exponent (0: plain NLL)")
    t.add_argument("--classes", help="comma-separated classes to use (default: the targets')")
    t.add_argument("--val-fraction", type=float, default=0.1)
    t.add_argument("--test-fraction", type=float, default=0.1)
    t.add_argument("--no-augment", action="store_true", help="no rotation/flip augmentation")
    t.add_argument("--time-limit", type=float, help="minutes of training in all")
    t.add_argument("--device", default="cpu")
    t.add_argument("--resume", action="store_true", help="continue an interrupted run")
    t.set_defaults(func=run_train)

    e = rsub.add_parser("evaluate", help="score a run on held-out images; metrics.json, figures")
    e.add_argument("run", help="run directory")
    e.add_argument("--data", required=True)
    e.add_argument("--no-tta", action="store_true", help="no test-time augmentation")
    e.add_argument("--device", default="cpu")
    e.set_defaults(func=run_evaluate)

    q = rsub.add_parser("predict", help="predict targets (mean, sigma) for images")
    q.add_argument("run", help="run directory")
    q.add_argument("files", nargs="+", help=".npy images, HDF5 shards or data folders")
    q.add_argument("--csv", help="write CSV here instead of printing it")
    q.add_argument("--no-tta", action="store_true")
    q.add_argument("--device", default="cpu")
    q.set_defaults(func=run_predict)

    g = rsub.add_parser("population", help="one population quantity from many lenses, "
                                           "training prior divided out")
    g.add_argument("run", help="run directory")
    g.add_argument("--data", required=True, help="the population's images (shards or folder)")
    g.add_argument("--target", help="the target to combine (default: the run's only one)")
    g.add_argument("--model", choices=MODELS, default="mean",
                   help="mean: mean of a population with scatter (marginalised); "
                        "shared: one value for every lens (e.g. one axion mass)")
    g.add_argument("--scatter", type=float,
                   help="known population scatter for --model mean (default: marginalised)")
    g.add_argument("--prior", help="training prior uniform:LOW:HIGH or gaussian:MEAN:STD "
                                   "(default: the one the run recorded)")
    g.add_argument("--out", help="write the result here as JSON")
    g.add_argument("--no-tta", action="store_true")
    g.add_argument("--device", default="cpu")
    g.set_defaults(func=run_population)


def _split_list(text: str | None) -> list[str] | None:
    if text is None:
        return None
    items = [s.strip() for s in text.split(",") if s.strip()]
    return items or None


def run_train(args: argparse.Namespace) -> int:
    targets = _split_list(args.target)
    if not targets:
        raise DarklensError("--target needs at least one metadata column name")
    cfg = RegressionConfig(
        targets=targets, arch=args.arch, norm=args.norm, epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr, weight_decay=args.weight_decay,
        patience=args.patience if args.patience > 0 else None, beta=args.beta,
        augment=not args.no_augment, ensemble=args.ensemble, seed=args.seed,
        val_fraction=args.val_fraction, test_fraction=args.test_fraction,
        classes=_split_list(args.classes),
        max_minutes=args.time_limit, device=args.device)
    data = load_dataset(args.data)
    info = train_regression(data, cfg, args.out, resume=args.resume, data_source=args.data,
                            log=lambda m: print(m, file=sys.stderr))
    print(f"trained {len(info['members'])} member(s) on {info['data']['n_train']} images; "
          f"run in {args.out}")
    return 0


def evaluate_run(run_dir: str, data_path: str, tta: bool = True,
                 device: str = "cpu") -> dict:
    """Score a run on held-out images; write metrics.json, predictions.csv and figures."""
    run = load_regression_run(run_dir)
    data = load_dataset(data_path)
    classes = run.info.get("config", {}).get("classes")
    subset = regression_subset(data, run.targets, classes, data_path)
    same = is_training_data(data, run.info)
    if same:
        test = read_split(run_dir)["test"]
        keep = np.isin(subset.indices, test)
        if not keep.any():
            raise DarklensError(f"{data_path} is the training data of {run_dir}, whose test "
                                "split is empty (trained with --test-fraction 0?); evaluate "
                                "on separately simulated images")
        idx, truth = subset.indices[keep], subset.values[keep]
        used = (f"held-out test split of the training data ({len(idx)} images, indices in "
                f"{Path(run_dir) / 'split.json'})")
    else:
        idx, truth = subset.indices, subset.values
        used = f"all {len(idx)} usable images of {data_path} (not the training data)"
    mean, sigma = predict_images(run, data.images[idx], tta=tta, device=device)
    per_target = metrics_per_target(run.targets, truth, mean, sigma)
    figures = []
    for j, t in enumerate(run.targets):
        figures += [str(p) for p in regression_figures(t, truth[:, j], mean[:, j], sigma[:, j],
                                                       run_dir)]
    metrics: dict = {"targets": per_target, "n_images": len(idx), "evaluated_on": used,
                     "data": str(data_path), "tta": tta,
                     "ensemble": len(run.models), "figures": figures}
    if len(run.targets) == 1:
        metrics.update({k: per_target[run.targets[0]][k] for k in METRIC_KEYS})
        metrics["target"] = run.targets[0]
    for msg in subset.messages:
        metrics.setdefault("excluded", []).append(msg)
    write_json_atomic(Path(run_dir) / METRICS_JSON, metrics)
    cols = ["index"] + [f"{t}_{s}" for t in run.targets for s in ("true", "mean", "sigma")]
    rows = [[int(i)] + [float(v) for j in range(len(run.targets))
                        for v in (truth[r, j], mean[r, j], sigma[r, j])]
            for r, i in enumerate(idx)]
    write_text_atomic(Path(run_dir) / PREDICTIONS_CSV, _csv(cols, rows))
    return metrics


def run_evaluate(args: argparse.Namespace) -> int:
    metrics = evaluate_run(args.run, args.data, tta=not args.no_tta, device=args.device)
    print(f"evaluated on {metrics['evaluated_on']}")
    print(f"{'target':<20} " + " ".join(f"{k:>11}" for k in METRIC_KEYS))
    for t, m in metrics["targets"].items():
        print(f"{t:<20} " + " ".join(f"{m[k]:>11.4g}" for k in METRIC_KEYS))
    print(f"wrote {Path(args.run) / METRICS_JSON}")
    return 0


def _csv(columns: list[str], rows: list[list]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    w.writerows(rows)
    return buf.getvalue()


def run_predict(args: argparse.Namespace) -> int:
    run = load_regression_run(args.run)
    cols = ["file", "index"] + [f"{t}_{s}" for t in run.targets for s in ("mean", "sigma")]
    rows: list[list] = []
    for f in args.files:
        data = load_dataset(f)
        mean, sigma = predict_images(run, data.images, tta=not args.no_tta, device=args.device)
        files = data.attrs.get("files") if isinstance(data.attrs, dict) else None
        for i in range(len(data)):
            name = files[i] if files and len(files) == len(data) else f
            rows.append([name, i] + [float(v) for j in range(len(run.targets))
                                     for v in (mean[i, j], sigma[i, j])])
    text = _csv(cols, rows)
    if args.csv:
        write_text_atomic(args.csv, text)
        print(f"wrote {len(rows)} predictions to {args.csv}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def population_table(res: dict) -> str:
    """The short table ``darklens regress population`` prints."""
    lo, hi = res["interval_68"]
    rows = [("target", f"{res['target']} ({res['model']})"),
            ("N lenses", str(res["n_lenses"])),
            ("estimate", f"{res['estimate']:.4g} +- {res['sigma']:.2g}  "
                         f"(68%: [{lo:.4g}, {hi:.4g}])")]
    if res["true_mean"] is not None:
        rows += [("true mean", f"{res['true_mean']:.4g}"), ("pull", f"{res['pull']:+.2f}")]
    rows += [("naive", f"{res['naive_mean']:.4g} +- {res['naive_sigma']:.2g}  "
                       "(per-lens results multiplied, prior not divided out)"),
             ("prior", res["prior_source"]), ("images", res["used"])]
    return "\n".join(f"{k:<10} {v}" for k, v in rows) + "\n"


def run_population(args: argparse.Namespace) -> int:
    prior = parse_prior(args.prior) if args.prior else None
    res = population_of_run(args.run, args.data, target=args.target, model=args.model,
                            scatter=args.scatter, prior=prior, tta=not args.no_tta,
                            device=args.device)
    sys.stdout.write(population_table(res))
    if res["warning"]:
        print(f"warning: {res['warning']}", file=sys.stderr)
    if args.out:
        write_json_atomic(args.out, res)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0
