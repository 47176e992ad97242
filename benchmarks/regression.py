"""Regression benchmark: per-lens accuracy, calibration, identifiability, population pulls.

Default task (the public DeepLense regression task): from 64x64 vortex images of the
`model-iii` preset (HST WFC3-like; the vortex is centred on the lens, its half-length
0.03e-22 eV / m arcsec sets the axion mass m, log10 m uniform in [-24, -22]; vortex mass fixed
at 3e10 M_sun), the posterior of log10 m (``--target``, ``--class``, ``--preset``, ``--set``
choose another, e.g. ``--target f_sub``). Test images are simulated with another seed than the
training images (never seen in training) and serve as the pool from which ``--populations``
populations of each of ``--population-sizes`` lenses are drawn from a truncated N(m, tau^2),
another distribution than the training prior (``draw_populations``), then combined
(``darklens.evaluate.hierarchical``) dividing out the effective and the nominal prior; the JSON
holds every pull. Published DeepLense figures, on their own Model III simulations (not ours, so
only indicative): MAE 0.126 (XResNet18Hybrid, 200 GPU epochs), 0.133 (ResNet34).

    # what a fixed CPU budget reaches (training CPU time; one thread on a shared machine):
    python benchmarks/regression.py --cpu-minutes 4 --n-train 4000 --n-test 2500 --threads 1 \
        --posterior flow --out benchmarks/results/regression-flow-cpu4.json
    # GPU-sized run:
    python benchmarks/regression.py --full --posterior flow \
        --out benchmarks/results/regression-full.json

``--cpu-minutes M`` times a few training steps first and sets the number of epochs so that
training takes about M minutes of process CPU time (``--clock cpu``, no wall-time guard) or of
wall time (``--clock wall``, with a time guard). Simulation and evaluation time are reported
separately.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from scipy.stats import norm

from darklens import __version__
from darklens.data.targets import default_classes
from darklens.evaluate.calibration import calibration_report
from darklens.evaluate.hierarchical import infer_mean_scatter
from darklens.evaluate.identifiability import identifiability
from darklens.evaluate.regression_metrics import metrics_per_target
from darklens.evaluate.run_population import prior_std
from darklens.io import write_json_atomic
from darklens.models.posterior_heads import POSTERIORS
from darklens.models.regression_persistence import (
    load_regression_run,
    predict_images,
    predict_posteriors,
    read_run_info,
    recalibrated,
)
from darklens.models.regressor import Regressor, gaussian_nll, random_dihedral
from darklens.models.training_prior import TrainingPrior
from darklens.simulate.presets import get_preset, with_overrides
from darklens.simulate.simulator import simulate_dataset
from darklens.train.regression import RegressionConfig, recalibrate_run, train_regression

TARGET = "log10_axion_mass"
PUBLISHED = [("DeepLense XResNet18Hybrid (200 GPU epochs)", 0.126),
             ("DeepLense ResNet34", 0.133)]


def throughput(arch: str, norm: str, batch_size: int, n_pix: int, device: str,
               steps: int = 8, clock=time.perf_counter) -> float:
    """Training images per second of one member (forward, backward, step, augmentation), by
    ``clock`` (wall time, or ``time.process_time``: CPU time, whatever else runs)."""
    torch.manual_seed(0)
    model = Regressor([TARGET], arch, norm=norm).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.rand(batch_size, 1, n_pix, n_pix)
    y = torch.randn(batch_size, 1, device=device)
    gen = torch.Generator().manual_seed(0)
    for i in range(steps + 2):
        if i == 2:
            t0 = clock()
        mu, lv = model(random_dihedral(x, gen).to(device))
        loss = gaussian_nll(mu, lv, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return steps * batch_size / (clock() - t0)


def draw_populations(truth: np.ndarray, low: float, high: float, sizes: list[int],
                     n_pop: int, rng: np.random.Generator) -> list[dict]:
    """Populations whose targets follow a truncated N(m, tau^2) on [low, high], another
    distribution than the training prior: m uniform in the middle 80% of the range, tau
    uniform in [0.05, 0.125] of the range. Each population's N true values are drawn exactly,
    then each is matched to the unused pool lens nearest to it (the pool: test lenses drawn
    from the training prior), so the lenses' truths follow the population up to the pool's
    spacing. Returns {n, m, tau, index} per population."""
    width = high - low
    pops = []
    for n in sizes:
        for _ in range(n_pop):
            m = rng.uniform(low + 0.1 * width, high - 0.1 * width)
            tau = rng.uniform(0.05, 0.125) * width
            a, b = norm.cdf(low, m, tau), norm.cdf(high, m, tau)
            want = norm.ppf(rng.uniform(a, b, n), m, tau)
            free = np.ones(truth.size, dtype=bool)
            idx = []
            for y in want:
                cand = np.flatnonzero(free)
                k = cand[np.argmin(np.abs(truth[cand] - y))]
                free[k] = False
                idx.append(k)
            pops.append({"n": n, "m": float(m), "tau": float(tau), "index": np.array(idx)})
    return pops


def population_pulls(pops: list[dict], grid: np.ndarray, density: np.ndarray,
                     truth: np.ndarray, prior: TrainingPrior, target: str) -> list[dict]:
    """Infer each population's m (scatter marginalised, prior divided out) and its pull."""
    rows = []
    for p in pops:
        res = infer_mean_scatter(grid, density[p["index"]], prior, parameter=target)
        r = res.result
        lo95, hi95 = r.interval_95
        rows.append({"n": p["n"], "m": p["m"], "tau": p["tau"], "estimate": r.mean,
                     "sigma": r.std, "pull": (r.mean - p["m"]) / r.std,
                     "interval_68": list(r.interval_68), "interval_95": [lo95, hi95],
                     "in_95": bool(lo95 <= p["m"] <= hi95), "constrained": res.constrained,
                     "limit": res.limit, "lens_mean": float(truth[p["index"]].mean()),
                     "scatter": res.scatter})
    return rows


def pull_summary(rows: list[dict]) -> dict:
    """Per N: mean and std of the pulls of the constrained populations, and how many were
    'not constrained' (with the share whose 95% interval holds the truth)."""
    out = {}
    for n in sorted({r["n"] for r in rows}):
        sel = [r for r in rows if r["n"] == n]
        con = [r["pull"] for r in sel if r["constrained"]]
        nc = [r for r in sel if not r["constrained"]]
        out[str(n)] = {"populations": len(sel), "constrained": len(con),
                       "pull_mean": float(np.mean(con)) if con else None,
                       "pull_std": float(np.std(con)) if con else None,
                       "pull_mean_all": float(np.mean([r["pull"] for r in sel])),
                       "pull_std_all": float(np.std([r["pull"] for r in sel])),
                       "not_constrained": len(nc),
                       "not_constrained_in_95": sum(r["in_95"] for r in nc),
                       "in_95_all": sum(r["in_95"] for r in sel)}
    return out


def evaluate_posteriors(pred, truth: np.ndarray, targets: list[str], support, info: dict,
                        seed: int) -> dict:
    """Per-lens accuracy (``metrics``: posterior mean and sigma), calibration and
    identifiability of one set of test posteriors."""
    ident = {}
    for j, t in enumerate(targets):
        prior = TrainingPrior.from_dict(info["training_prior"][t]["prior"])
        ident[t] = identifiability(pred.samples[:, :, j], truth[:, j], prior_std(prior) ** 2)
    return {"metrics": {"tta": metrics_per_target(targets, truth, pred.mean,
                                                  np.sqrt(pred.var))},
            "calibration": calibration_report(pred.samples, truth, targets, support,
                                              seed=seed),
            "identifiability": ident}


def populations(pred, truth: np.ndarray, targets: list[str], support, grids, info: dict,
                sizes: list[int], n_pop: int, rng: np.random.Generator,
                effective_key: str) -> dict:
    """Population pulls per target, dividing out the effective prior (``effective_key`` of
    the run's record: the raw or the recalibrated posteriors') and the nominal one."""
    out: dict = {}
    for j, t in enumerate(targets):
        lo, hi = support[j] if support else (truth[:, j].min(), truth[:, j].max())
        pops = draw_populations(truth[:, j], lo, hi, sizes, n_pop, rng)
        out[t] = {}
        for divisor in ("effective", "training"):  # the prior divided out: both measured
            entry = info[effective_key if divisor == "effective" else "training_prior"][t]
            prior = TrainingPrior.from_dict(entry["prior"])
            rows = population_pulls(pops, grids[j], pred.density[:, j], truth[:, j], prior, t)
            out[t][divisor] = {"summary": pull_summary(rows), "populations": rows,
                               "prior_source": entry["source"]}
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--cpu-minutes", type=float, default=20.0, help="training budget (CPU)")
    mode.add_argument("--full", action="store_true", help="GPU-sized run")
    p.add_argument("--preset", default="model-iii")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="preset override (as darklens simulate --set)")
    p.add_argument("--target", default=TARGET, help="target(s), comma-separated")
    p.add_argument("--class", dest="cls", help="image class (default: the target's)")
    p.add_argument("--posterior", choices=POSTERIORS, default="binned")
    p.add_argument("--n-bins", type=int, default=40)
    p.add_argument("--n-train", type=int, help="training+validation images (default by mode)")
    p.add_argument("--n-test", type=int, default=4000,
                   help="test lenses from the training prior (also the populations' pool)")
    p.add_argument("--arch", help="small | resnet18 | resnet34 (default by mode)")
    p.add_argument("--epochs", type=int, help="default: from the budget (CPU) or 100 (full)")
    p.add_argument("--ensemble", type=int, default=1)
    p.add_argument("--norm", choices=("batch", "group"), default="batch")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--beta", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                   help="what --cpu-minutes counts: process CPU time (epochs planned from the "
                        "CPU-time rate, no wall-time guard; fair on a shared machine) or wall "
                        "time (planned and guarded by the wall clock, as before)")
    p.add_argument("--device", default="auto")
    p.add_argument("--run-dir", help="keep the run here (default: a temporary folder)")
    p.add_argument("--populations", type=int, default=20, help="populations per size")
    p.add_argument("--population-sizes", default="50,200")
    p.add_argument("--draws", type=int, default=256, help="posterior draws per test lens")
    p.add_argument("--no-recalibrate", action="store_true",
                   help="fit no PIT recalibration on the validation images (by default one "
                        "is fitted, and both the raw and the recalibrated posteriors are "
                        "measured: top level the recalibrated, 'raw' the raw)")
    p.add_argument("--evaluate-only", action="store_true",
                   help="evaluate the finished run in --run-dir (trained by this script with "
                        "the same data options) without training: refits its recalibration "
                        "on its validation images, then measures as after training")
    p.add_argument("--out", default="benchmarks/results/regression.json")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = args.device if args.device != "auto" else (
        "cuda" if torch.cuda.is_available() else "cpu")
    full = args.full
    n_train = args.n_train or (50_000 if full else 16_000)
    arch = args.arch or ("resnet18" if full else "small")
    targets = [t.strip() for t in args.target.split(",") if t.strip()]
    cls = args.cls or default_classes(targets, ("no_sub", "cdm", "vortex"))[-1]
    overrides = dict(kv.split("=", 1) for kv in args.set)
    preset = with_overrides(get_preset(args.preset), overrides)

    t0 = time.perf_counter()
    train_data = simulate_dataset(preset, n_train, seed=args.seed, classes=(cls,))
    test_data = simulate_dataset(preset, args.n_test, seed=args.seed + 10_000, classes=(cls,))
    sim_seconds = time.perf_counter() - t0

    budget = None if full else args.cpu_minutes * 60
    clock = time.process_time if args.clock == "cpu" and not full else time.perf_counter
    rate = throughput(arch, args.norm, args.batch_size, train_data.images.shape[-1], device,
                      clock=clock)
    n_fit = int(round(0.9 * n_train))
    if args.evaluate_only and not args.run_dir:
        raise SystemExit("--evaluate-only needs --run-dir")
    if args.epochs:
        epochs = args.epochs
    elif full:
        epochs = 100
    else:  # leave ~10% of the budget for validation passes
        epochs = max(1, int(0.9 * budget * rate / (n_fit * args.ensemble)))
    print(f"simulated {n_train} + {args.n_test} {cls} images of {args.preset} in "
          f"{sim_seconds:.0f}s; {arch}: {rate:.0f} training img/s -> {epochs} epochs")

    cfg = RegressionConfig(targets=targets, arch=arch, norm=args.norm, epochs=epochs,
                           batch_size=args.batch_size, lr=args.lr, beta=args.beta,
                           patience=None, ensemble=args.ensemble, seed=args.seed,
                           val_fraction=0.1, test_fraction=0.0,
                           max_minutes=None if budget is None or args.clock == "cpu"
                           else budget / 60,
                           device=device, posterior=args.posterior, n_bins=args.n_bins,
                           recalibrate=not args.no_recalibrate)
    sizes = [int(v) for v in args.population_sizes.split(",") if v.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(args.run_dir) if args.run_dir else Path(tmp) / "run"
        t1, c1 = time.perf_counter(), time.process_time()
        if args.evaluate_only:  # the run is there: (re)fit only its recalibration
            info = recalibrate_run(run_dir, train_data, seed=args.seed,
                                   log=lambda m: print(m, flush=True)) \
                if not args.no_recalibrate else read_run_info(run_dir)
            train_seconds = sum(m["seconds"] for m in info["members"])
            train_cpu_seconds = None
            epochs = info["config"]["epochs"]
        else:
            info = train_regression(train_data, cfg, run_dir,
                                    data_source=f"simulate_dataset({args.preset}, {n_train}, "
                                                f"seed={args.seed})",
                                    log=lambda m: print(m, flush=True))
            train_seconds = time.perf_counter() - t1
            train_cpu_seconds = time.process_time() - c1
        run = load_regression_run(run_dir)
        t2 = time.perf_counter()
        truth = np.stack([test_data.metadata[t] for t in targets], axis=1).astype(np.float64)
        support = run.support()
        grids = run.grids()
        raw = predict_posteriors(run, test_data.images, tta=True, n_samples=args.draws,
                                 seed=args.seed, device=device, recalibrate=False)
        variants = {"raw": raw}
        if run.recalibration is not None:  # what the run predicts by default
            variants["recalibrated"] = recalibrated(raw, run.recalibration, grids)
        evaluated = {name: evaluate_posteriors(pred, truth, targets, support, info, args.seed)
                     for name, pred in variants.items()}
        if run.posterior == "gaussian":
            mean, sigma = predict_images(run, test_data.images, tta=False, device=device,
                                         recalibrate=False)
            evaluated["raw"]["metrics"]["plain"] = metrics_per_target(targets, truth, mean,
                                                                      sigma)
        eval_seconds = time.perf_counter() - t2
        t3 = time.perf_counter()
        for name, pred in variants.items():
            rng = np.random.default_rng(args.seed + 30_000)  # the same populations for each
            evaluated[name]["population"] = populations(
                pred, truth, targets, support, grids, info, sizes, args.populations, rng,
                "effective_prior_recalibrated" if name == "recalibrated" else
                "effective_prior")
        pop_seconds = time.perf_counter() - t3
        default = "recalibrated" if "recalibrated" in variants else "raw"

    report = {
        "benchmark": "regression",
        "mode": "full" if full else f"cpu-{args.cpu_minutes:g}min",
        "targets": targets, "preset": args.preset, "overrides": overrides, "class": cls,
        "posterior": args.posterior, "arch": arch, "ensemble": args.ensemble,
        "n_train": info["data"]["n_train"],
        "n_val": info["data"]["n_val"], "n_test": args.n_test,
        "epochs_planned": epochs,
        "epochs_run": [m["epochs_run"] for m in info["members"]],
        "best_epoch": [m["best_epoch"] for m in info["members"]],
        "stopped": [m["stopped"] for m in info["members"]],
        "train_images_per_second": rate,
        "seconds": {"simulate": sim_seconds, "train": train_seconds, "evaluate": eval_seconds,
                    "populations": pop_seconds, "train_cpu": train_cpu_seconds},
        "clock": args.clock,
        "evaluate_only": args.evaluate_only,
        **evaluated[default],
        "posteriors": default,
        "raw": evaluated["raw"] if default != "raw" else None,
        "recalibration": None if run.recalibration is None else run.recalibration.to_dict(),
        "training_prior": info["training_prior"],
        "published": {name: mae for name, mae in PUBLISHED} if targets == [TARGET] else {},
        "config": {**vars(args), "device": device},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "threads": torch.get_num_threads(), "torch": torch.__version__,
                    "load_average": os.getloadavg(),
                    "cuda": torch.cuda.get_device_name(0) if device == "cuda" else None},
        "darklens_version": __version__,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    print_tables(report)
    if not all(math.isfinite(m["mae"]) for m in report["metrics"]["tta"].values()):
        raise SystemExit("non-finite MAE")
    write_json_atomic(args.out, report)
    print(f"\nwrote {args.out}")
    return report


def print_tables(report: dict) -> None:
    """Markdown tables: accuracy and calibration per target, population pulls per N, for the
    default posteriors and (when recalibrated) the raw ones."""
    variants = [(report["posteriors"], report)]
    if report.get("raw"):
        variants.append(("raw", report["raw"]))
    print("\n| target | posterior | training | MAE | RMSE | R2 | cov 68 | cov 95 | SBC p | "
          "TARP 68 | TARP 95 | measurable range |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, part in variants:
        for t, m in part["metrics"]["tta"].items():
            c = part["calibration"]["targets"][t]
            rng = part["identifiability"][t]["measurable_range"]
            print(f"| {t} | {report['posterior']} + TTA, {name} | {report['mode']}, "
                  f"{sum(report['epochs_run'])} epochs, {report['n_train']} images | "
                  f"{m['mae']:.4g} | {m['rmse']:.4g} | {m['r2']:.3f} | "
                  f"{c['coverage_by_truth']['central_68']:.3f} | "
                  f"{c['coverage_by_truth']['central_95']:.3f} | {c['sbc']['p_value']:.3g} | "
                  f"{c['tarp']['ecp_68']:.3f} | {c['tarp']['ecp_95']:.3f} | "
                  f"{'none' if rng is None else f'[{rng[0]:.3g}, {rng[1]:.3g}]'} |")
    print("\n| target | posteriors | prior divided out | N | populations | constrained | "
          "pull mean | pull std | not constrained (truth in 95%) | all: pull mean / std |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, part in variants:
        for t, by_divisor in part["population"].items():
            for divisor, pop in by_divisor.items():
                for n, s in pop["summary"].items():
                    pm = "-" if s["pull_mean"] is None else f"{s['pull_mean']:+.2f}"
                    ps = "-" if s["pull_std"] is None else f"{s['pull_std']:.2f}"
                    print(f"| {t} | {name} | {divisor} | {n} | {s['populations']} | "
                          f"{s['constrained']} | {pm} | {ps} | {s['not_constrained']} "
                          f"({s['not_constrained_in_95']}) | {s['pull_mean_all']:+.2f} / "
                          f"{s['pull_std_all']:.2f} |")


if __name__ == "__main__":
    main()
