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
- ``predict RUN FILES...``: predictions and uncertainties for any images, as CSV, read a
  batch at a time (``darklens.commands.regress_predict``).
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

from darklens.commands import regress_predict
from darklens.data.formats import load_dataset
from darklens.data.targets import regression_subset
from darklens.errors import DarklensError, DataError
from darklens.evaluate.calibration import calibration_report
from darklens.evaluate.identifiability import identifiability
from darklens.evaluate.regression_metrics import metrics_per_target
from darklens.evaluate.run_population import DIVISORS, MODELS, population_of_run, prior_std
from darklens.io import write_json_atomic, write_text_atomic
from darklens.models.posterior_heads import POSTERIORS
from darklens.models.recalibration import load_recalibration
from darklens.models.regression_persistence import (
    is_training_data,
    load_regression_run,
    predict_posteriors,
    read_run_info,
    read_split,
    recalibrated,
)
from darklens.models.regressor import ARCHS
from darklens.models.training_prior import TrainingPrior, parse_prior
from darklens.report.regression_figures import calibration_figure, regression_figures
from darklens.train.regression import RegressionConfig, recalibrate_run, train_regression

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
    t.add_argument("--skip-nan", action="store_true",
                   help="drop images whose target is NaN (default: refuse such labels)")
    t.add_argument("--max-minutes", type=float,
                   help="minutes of training in all members together (as darklens sweep)")
    t.add_argument("--time-limit", type=float, dest="time_limit",
                   help=argparse.SUPPRESS)  # deprecated spelling of --max-minutes
    t.add_argument("--posterior", choices=POSTERIORS, default="gaussian",
                   help="per-lens posterior: gaussian (mean, sigma), binned (softmax over "
                        "bins of the prior's support, per target) or flow (joint neural "
                        "spline flow)")
    t.add_argument("--n-bins", type=int, default=40, help="bins of --posterior binned")
    t.add_argument("--prior", action="append", default=[], metavar="NAME=uniform:LOW:HIGH",
                   help="a target's known training prior (its support bounds the binned and "
                        "flow posteriors; training values outside it are refused)")
    t.add_argument("--no-recalibrate", action="store_true",
                   help="fit no PIT recalibration of the posteriors on the validation images")
    t.add_argument("--device", default="cpu")
    t.add_argument("--resume", action="store_true", help="continue an interrupted run")
    t.set_defaults(func=run_train)

    e = rsub.add_parser("evaluate", help="score a run on held-out images; metrics.json, figures")
    e.add_argument("run", help="run directory")
    e.add_argument("--data", required=True)
    e.add_argument("--no-tta", action="store_true", help="no test-time augmentation")
    e.add_argument("--seed", type=int, default=0, help="seed of the posterior draws")
    e.add_argument("--no-recalibration", action="store_true",
                   help="score the raw posteriors, even where the run has a recalibration")
    e.add_argument("--device", default="cpu")
    e.set_defaults(func=run_evaluate)

    c = rsub.add_parser("recalibrate", help="fit (again) a run's PIT recalibration on its "
                                            "validation images (e.g. a run trained before)")
    c.add_argument("run", help="run directory")
    c.add_argument("--data", required=True, help="the run's training data")
    c.add_argument("--seed", type=int, default=0, help="seed of the posterior draws")
    c.set_defaults(func=run_recalibrate)

    regress_predict.register(rsub)

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
    g.add_argument("--divide-by", choices=DIVISORS, default="effective",
                   help="effective: the prior the network learned (recorded at training); "
                        "training: the nominal training prior")
    g.add_argument("--out", help="write the result here as JSON")
    g.add_argument("--no-tta", action="store_true")
    g.add_argument("--no-recalibration", action="store_true",
                   help="the raw posteriors (and their effective prior), even where the run "
                        "has a recalibration")
    g.add_argument("--device", default="cpu")
    g.set_defaults(func=run_population)


def _split_list(text: str | None) -> list[str] | None:
    if text is None:
        return None
    items = [s.strip() for s in text.split(",") if s.strip()]
    return items or None


def _max_minutes(args: argparse.Namespace) -> float | None:
    if args.time_limit is not None:
        if args.max_minutes is not None:
            raise DarklensError("give --max-minutes only (--time-limit is its old spelling)")
        print("warning: --time-limit is deprecated; use --max-minutes", file=sys.stderr)
        return args.time_limit
    return args.max_minutes


def _priors(items: list[str], targets: list[str]) -> dict[str, str] | None:
    """``--prior NAME=SPEC`` (or ``--prior SPEC`` with one target) as {target: SPEC}."""
    out = {}
    for item in items:
        name, sep, spec = item.partition("=")
        if not sep:
            if len(targets) != 1:
                raise DarklensError(f"--prior {item}: name the target (NAME=uniform:LOW:HIGH)")
            name, spec = targets[0], item
        out[name.strip()] = spec.strip()
    return out or None


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
        max_minutes=_max_minutes(args), device=args.device, posterior=args.posterior,
        n_bins=args.n_bins, priors=_priors(args.prior, targets), skip_nan=args.skip_nan,
        recalibrate=not args.no_recalibrate)
    data = load_dataset(args.data)
    info = train_regression(data, cfg, args.out, resume=args.resume, data_source=args.data,
                            log=lambda m: print(m, file=sys.stderr))
    print(f"trained {len(info['members'])} member(s) on {info['data']['n_train']} images; "
          f"run in {args.out}")
    return 0


def run_recalibrate(args: argparse.Namespace) -> int:
    info = recalibrate_run(args.run, load_dataset(args.data), seed=args.seed,
                           log=lambda m: print(m, file=sys.stderr))
    fits = json_beta(args.run)
    print(f"recalibrated {args.run} on its {info['data']['n_val']} validation images"
          + (f" ({fits})" if fits else ""))
    return 0


def json_beta(run_dir: str) -> str:
    """The fitted Beta maps of a run's recalibration, in words."""
    recal = load_recalibration(run_dir, read_run_info(run_dir)["targets"])
    if recal is None:
        return ""
    return "; ".join(f"{t}: Beta({v['a']:.3g}, {v['b']:.3g}), uniform p {v['p_uniform']:.2g}"
                     for t, v in (recal.info.get("beta") or {}).items())


def _outside_support(run, subset, idx: np.ndarray, truth: np.ndarray,
                     data_path: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Drop test images whose truth lies outside the run's support (its posteriors cannot
    hold them), saying how many; DataError if none is left."""
    support = run.support()
    if support is None:
        return idx, truth, []
    lo = np.array([s[0] for s in support])
    hi = np.array([s[1] for s in support])
    tol = 1e-9 * (hi - lo)
    inside = np.all((truth >= lo - tol) & (truth <= hi + tol), axis=1)
    if inside.all():
        return idx, truth, []
    box = ", ".join(f"{t} in [{a:g}, {b:g}]" for t, (a, b) in zip(run.targets, support,
                                                                  strict=True))
    if not inside.any():
        raise DataError(f"{data_path}: all {len(idx)} images have targets outside the run's "
                        f"prior support ({box}); the run cannot measure them")
    msg = (f"excluded {int((~inside).sum())} of {len(idx)} images whose targets lie outside "
           f"the run's prior support ({box})")
    return idx[inside], truth[inside], [msg]


def evaluate_run(run_dir: str, data_path: str, tta: bool = True,
                 device: str = "cpu", n_samples: int = 256, seed: int = 0,
                 recalibrate: bool = True) -> dict:
    """Score a run on held-out images; write metrics.json, predictions.csv and figures.

    Beside accuracy and marginal coverage, per target: SBC ranks, TARP expected coverage,
    coverage in bins of the truth (``calibration``) and posterior width and contraction by
    truth (``identifiability``), from ``n_samples`` posterior draws per image (seeded). With
    a run that has a recalibration (and ``recalibrate``), these are of the recalibrated
    posteriors, the raw ones' calibration beside them (``calibration_raw``) and the map in
    ``recalibration``."""
    run = load_regression_run(run_dir)
    data = load_dataset(data_path)
    classes = run.info.get("config", {}).get("classes")
    subset = regression_subset(data, run.targets, classes, data_path,
                               skip_nan=bool(run.info.get("config", {}).get("skip_nan", True)))
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
    idx, truth, dropped = _outside_support(run, subset, idx, truth, data_path)
    support = run.support()
    recal = run.recalibration if recalibrate else None
    pred = predict_posteriors(run, data.images[idx], tta=tta, n_samples=n_samples,
                              density=recal is not None, seed=seed, device=device,
                              recalibrate=False)
    calib_raw = None
    if recal is not None:
        calib_raw = calibration_report(pred.samples, truth, list(run.targets), support,
                                       seed=seed)
        pred = recalibrated(pred, recal, run.grids())
    mean, sigma = pred.mean, np.sqrt(pred.var)
    per_target = metrics_per_target(run.targets, truth, mean, sigma)
    calib = calibration_report(pred.samples, truth, list(run.targets), support, seed=seed)
    figures = []
    for j, t in enumerate(run.targets):
        prior = _prior_var(run, t, j, support)
        ident = identifiability(pred.samples[:, :, j], truth[:, j], prior) if prior else None
        per_target[t].update({"calibration": calib["targets"][t], "identifiability": ident})
        if calib_raw is not None:
            per_target[t]["calibration_raw"] = calib_raw["targets"][t]
        figures += [str(p) for p in regression_figures(t, truth[:, j], mean[:, j], sigma[:, j],
                                                       run_dir)]
        figures.append(str(calibration_figure(t, per_target[t], run_dir)))
    metrics: dict = {"targets": per_target, "n_images": len(idx), "evaluated_on": used,
                     "data": str(data_path), "tta": tta, "posterior": run.posterior,
                     "ensemble": len(run.models), "figures": figures,
                     "draws": {"n": calib["n_draws"], "seed": seed},
                     "recalibration": None if recal is None else recal.to_dict()}
    if "tarp_joint" in calib:
        metrics["tarp_joint"] = calib["tarp_joint"]
    if len(run.targets) == 1:
        metrics.update({k: per_target[run.targets[0]][k] for k in METRIC_KEYS})
        metrics["target"] = run.targets[0]
    for msg in subset.messages + dropped:
        metrics.setdefault("excluded", []).append(msg)
    cols = ["index"] + [f"{t}_{s}" for t in run.targets for s in ("true", "mean", "sigma")]
    rows = [[int(i)] + [float(v) for j in range(len(run.targets))
                        for v in (truth[r, j], mean[r, j], sigma[r, j])]
            for r, i in enumerate(idx)]
    write_text_atomic(Path(run_dir) / PREDICTIONS_CSV, _csv(cols, rows))
    write_json_atomic(Path(run_dir) / METRICS_JSON, metrics)
    return metrics


def _prior_var(run, target: str, j: int, support: list[list[float]] | None) -> float | None:
    """Variance of the target's recorded training prior (else of a uniform on its support)."""
    entry = ((run.info.get("training_prior") or {}).get(target) or {}).get("prior")
    if entry:
        try:
            return prior_std(TrainingPrior.from_dict(entry)) ** 2
        except ValueError:
            pass
    if support is not None:
        return (support[j][1] - support[j][0]) ** 2 / 12
    return None


def run_evaluate(args: argparse.Namespace) -> int:
    metrics = evaluate_run(args.run, args.data, tta=not args.no_tta, device=args.device,
                           seed=args.seed, recalibrate=not args.no_recalibration)
    print(f"evaluated on {metrics['evaluated_on']}")
    for msg in metrics.get("excluded", []):
        print(f"note: {msg}", file=sys.stderr)
    keys = (*METRIC_KEYS, "sbc_p", "tarp_68", "tarp_95", "measurable")
    print(f"{'target':<20} " + " ".join(f"{k:>11}" for k in keys))
    for t, m in metrics["targets"].items():
        cal, ident = m["calibration"], m["identifiability"] or {}
        rng = ident.get("measurable_range")
        extra = [cal["sbc"]["p_value"], cal["tarp"]["ecp_68"], cal["tarp"]["ecp_95"]]
        print(f"{t:<20} " + " ".join(f"{v:>11.4g}" for v in [*(m[k] for k in METRIC_KEYS),
                                                              *extra])
              + f" {'none' if rng is None else f'[{rng[0]:.3g}, {rng[1]:.3g}]':>11}")
    print(f"wrote {Path(args.run) / METRICS_JSON}")
    return 0


def _csv(columns: list[str], rows: list[list]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    w.writerows(rows)
    return buf.getvalue()


def population_table(res: dict) -> str:
    """The short table ``darklens regress population`` prints."""
    lo, hi = res["interval_68"]
    lo95, hi95 = res["interval_95"]
    rows = [("target", f"{res['target']} ({res['model']})"),
            ("N lenses", str(res["n_lenses"]))]
    if res.get("constrained") is False:
        limit = res.get("limit") or {}
        bound = (f"; {res['target']} > {limit['lower']:.4g}" if "lower" in limit else
                 f"; {res['target']} < {limit['upper']:.4g}" if "upper" in limit else "")
        rows.append(("estimate", f"not constrained: 95% interval [{lo95:.4g}, {hi95:.4g}]"
                                 f"{bound} (95%)"))
    else:
        rows.append(("estimate", f"{res['estimate']:.4g} +- {res['sigma']:.2g}  "
                                 f"(68%: [{lo:.4g}, {hi:.4g}]; 95%: [{lo95:.4g}, {hi95:.4g}])"))
    if res.get("scatter_posterior"):
        sc = res["scatter_posterior"]
        rows.append(("scatter", f"{sc['mean']:.3g}  (68%: [{sc['interval_68'][0]:.3g}, "
                                f"{sc['interval_68'][1]:.3g}])"))
    if res["true_mean"] is not None:
        rows += [("true mean", f"{res['true_mean']:.4g}"), ("pull", f"{res['pull']:+.2f}")]
    rows += [("naive", f"{res['naive_mean']:.4g} +- {res['naive_sigma']:.2g}  "
                       "(per-lens results multiplied, prior not divided out)"),
             ("prior", res["prior_source"]), ("divided by", res["divided_by"]),
             ("method", res["method"]),
             ("images", res["used"])]
    return "\n".join(f"{k:<10} {v}" for k, v in rows) + "\n"


def run_population(args: argparse.Namespace) -> int:
    prior = parse_prior(args.prior) if args.prior else None
    res = population_of_run(args.run, args.data, target=args.target, model=args.model,
                            scatter=args.scatter, prior=prior, tta=not args.no_tta,
                            device=args.device, divide_by=args.divide_by,
                            recalibrate=not args.no_recalibration)
    sys.stdout.write(population_table(res))
    if res["warning"]:
        print(f"warning: {res['warning']}", file=sys.stderr)
    if args.out:
        write_json_atomic(args.out, res)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0
