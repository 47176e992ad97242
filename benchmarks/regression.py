"""Axion-mass regression on the `model-iii` preset: MAE and calibration of the Gaussian head.

Task (the public DeepLense regression task): from 64x64 vortex images of the `model-iii`
preset (HST WFC3-like; the vortex is centred on the lens, its half-length 0.03e-22 eV / m
arcsec sets the axion mass m, log10 m uniform in [-24, -22]; vortex mass fixed at 3e10 M_sun),
predict log10 m with a mean and a standard deviation. Test images are simulated with another
seed than the training images (never seen in training). Published DeepLense figures, on their
own Model III simulations (not ours, so only indicative): MAE 0.126 (XResNet18Hybrid, 200 GPU
epochs), 0.133 (ResNet34).

    # what a fixed CPU budget reaches (training time only; 2 threads):
    python benchmarks/regression.py --cpu-minutes 20 --out benchmarks/results/regression-cpu.json
    # GPU-sized run:
    python benchmarks/regression.py --full --out benchmarks/results/regression-full.json

``--cpu-minutes M`` times a few training steps first and sets the number of epochs so that
training fits in M minutes (the cosine schedule then completes); a time guard stops it in any
case. Simulation and evaluation time are reported separately.
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

from darklens import __version__
from darklens.evaluate.population import infer_shared_value
from darklens.evaluate.regression_metrics import metrics_per_target
from darklens.io import write_json_atomic
from darklens.models.regression_persistence import load_regression_run, predict_images
from darklens.models.regressor import Regressor, gaussian_nll, random_dihedral
from darklens.models.training_prior import TrainingPrior
from darklens.simulate.presets import get_preset, with_overrides
from darklens.simulate.simulator import simulate_dataset
from darklens.train.regression import RegressionConfig, train_regression

TARGET = "log10_axion_mass"
PUBLISHED = [("DeepLense XResNet18Hybrid (200 GPU epochs)", 0.126),
             ("DeepLense ResNet34", 0.133)]


def throughput(arch: str, norm: str, batch_size: int, n_pix: int, device: str,
               steps: int = 8) -> float:
    """Training images per second of one member (forward, backward, step, augmentation)."""
    torch.manual_seed(0)
    model = Regressor([TARGET], arch, norm=norm).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.rand(batch_size, 1, n_pix, n_pix)
    y = torch.randn(batch_size, 1, device=device)
    gen = torch.Generator().manual_seed(0)
    for i in range(steps + 2):
        if i == 2:
            t0 = time.perf_counter()
        mu, lv = model(random_dihedral(x, gen).to(device))
        loss = gaussian_nll(mu, lv, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - t0)


def population_check(run, preset, truths: list[float], sizes: list[int], seed: int,
                     device: str) -> list[dict]:
    """One axion mass shared by N lenses: simulate them, predict each, combine.

    The training prior (log10 m uniform, from the preset's log-uniform axion-mass prior) is
    divided out (``infer_shared_value``); the naive inverse-variance mean is shown beside it.
    """
    ax = preset.axion_mass
    if ax.kind != "loguniform":
        raise SystemExit(f"population check needs a log-uniform axion-mass prior, not {ax.kind}")
    prior = TrainingPrior.uniform(math.log10(ax.low), math.log10(ax.high))
    rows = []
    for j, truth in enumerate(truths):
        pop = with_overrides(preset, {"axion_mass": str(10.0**truth)})
        data = simulate_dataset(pop, max(sizes), seed=seed + 20_000 + j, classes=("vortex",))
        mean, sigma = predict_images(run, data.images, tta=True, device=device)
        for n in sizes:
            mu, sd = mean[:n, 0], sigma[:n, 0]
            res = infer_shared_value(mu, sd, prior, parameter=TARGET)
            w = 1 / sd**2
            naive = float(np.sum(w * mu) / w.sum())
            lo, hi = res.interval_68
            rows.append({"truth": truth, "n": n, **res.to_dict(), "naive_mean": naive,
                         "naive_std": float(1 / np.sqrt(w.sum())),
                         "in_68": bool(lo <= truth <= hi),
                         "in_95": bool(res.interval_95[0] <= truth <= res.interval_95[1])})
    return rows


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--cpu-minutes", type=float, default=20.0, help="training budget (CPU)")
    mode.add_argument("--full", action="store_true", help="GPU-sized run")
    p.add_argument("--n-train", type=int, help="training+validation images (default by mode)")
    p.add_argument("--n-test", type=int, default=2000)
    p.add_argument("--arch", help="small | resnet18 | resnet34 (default by mode)")
    p.add_argument("--epochs", type=int, help="default: from the budget (CPU) or 100 (full)")
    p.add_argument("--ensemble", type=int, default=1)
    p.add_argument("--norm", choices=("batch", "group"), default="batch")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--beta", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--run-dir", help="keep the run here (default: a temporary folder)")
    p.add_argument("--population", default="-23.5,-23,-22.5",
                   help="true log10 axion masses of shared-mass populations ('' to skip)")
    p.add_argument("--population-sizes", default="10,50")
    p.add_argument("--out", default="benchmarks/results/regression.json")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = args.device if args.device != "auto" else (
        "cuda" if torch.cuda.is_available() else "cpu")
    full = args.full
    n_train = args.n_train or (50_000 if full else 16_000)
    arch = args.arch or ("resnet18" if full else "small")
    preset = get_preset("model-iii")

    t0 = time.perf_counter()
    train_data = simulate_dataset(preset, n_train, seed=args.seed, classes=("vortex",))
    test_data = simulate_dataset(preset, args.n_test, seed=args.seed + 10_000,
                                 classes=("vortex",))
    sim_seconds = time.perf_counter() - t0

    budget = None if full else args.cpu_minutes * 60
    rate = throughput(arch, args.norm, args.batch_size, train_data.images.shape[-1], device)
    n_fit = int(round(0.9 * n_train))
    if args.epochs:
        epochs = args.epochs
    elif full:
        epochs = 100
    else:  # leave ~10% of the budget for validation passes
        epochs = max(1, int(0.9 * budget * rate / (n_fit * args.ensemble)))
    print(f"simulated {n_train} + {args.n_test} images in {sim_seconds:.0f}s; "
          f"{arch}: {rate:.0f} training img/s -> {epochs} epochs")

    cfg = RegressionConfig(targets=[TARGET], arch=arch, norm=args.norm, epochs=epochs,
                           batch_size=args.batch_size, lr=args.lr, beta=args.beta,
                           patience=None, ensemble=args.ensemble, seed=args.seed,
                           val_fraction=0.1, test_fraction=0.0,
                           max_minutes=None if budget is None else budget / 60,
                           device=device)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(args.run_dir) if args.run_dir else Path(tmp) / "run"
        t1 = time.perf_counter()
        info = train_regression(train_data, cfg, run_dir,
                                data_source=f"simulate_dataset(model-iii, {n_train}, "
                                            f"seed={args.seed})",
                                log=lambda m: print(m, flush=True))
        train_seconds = time.perf_counter() - t1
        run = load_regression_run(run_dir)
        t2 = time.perf_counter()
        results = {}
        for tta in (False, True):
            mean, sigma = predict_images(run, test_data.images, tta=tta, device=device)
            truth = test_data.metadata[TARGET].reshape(-1, 1)
            results["tta" if tta else "plain"] = metrics_per_target([TARGET], truth, mean,
                                                                    sigma)[TARGET]
        eval_seconds = time.perf_counter() - t2
        truths = [float(v) for v in args.population.split(",") if v.strip()]
        sizes = [int(v) for v in args.population_sizes.split(",") if v.strip()]
        population = population_check(run, preset, truths, sizes, args.seed, device) \
            if truths and sizes else []

    report = {
        "benchmark": "regression",
        "mode": "full" if full else f"cpu-{args.cpu_minutes:g}min",
        "target": TARGET, "preset": "model-iii", "arch": arch, "ensemble": args.ensemble,
        "n_train": info["data"]["n_train"],
        "n_val": info["data"]["n_val"], "n_test": args.n_test,
        "epochs_planned": epochs,
        "epochs_run": [m["epochs_run"] for m in info["members"]],
        "best_epoch": [m["best_epoch"] for m in info["members"]],
        "stopped": [m["stopped"] for m in info["members"]],
        "train_images_per_second": rate,
        "seconds": {"simulate": sim_seconds, "train": train_seconds, "evaluate": eval_seconds},
        "metrics": results,
        "population": population,
        "published": {name: mae for name, mae in PUBLISHED},
        "config": {**vars(args), "device": device},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "threads": torch.get_num_threads(), "torch": torch.__version__,
                    "cuda": torch.cuda.get_device_name(0) if device == "cuda" else None},
        "darklens_version": __version__,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    print()
    print("| model | training | MAE | RMSE | R2 | coverage 68% | coverage 95% |")
    print("|---|---|---|---|---|---|---|")
    for key, label in (("plain", ""), ("tta", " + TTA")):
        m = results[key]
        print(f"| darklens {arch}{' x' + str(args.ensemble) if args.ensemble > 1 else ''}"
              f"{label} | {report['mode']}, {sum(report['epochs_run'])} epochs, "
              f"{info['data']['n_train']} images | {m['mae']:.3f} | {m['rmse']:.3f} | "
              f"{m['r2']:.3f} | {m['coverage_68']:.3f} | {m['coverage_95']:.3f} |")
    for name, mae in PUBLISHED:
        print(f"| {name} | published | {mae:.3f} | | | | |")
    if population:
        print("\nOne axion mass shared by N lenses (training prior divided out):\n")
        print("| true log10 m | N | estimate +- std | 68% interval | naive mean +- std |")
        print("|---|---|---|---|---|")
        for r in population:
            lo, hi = r["interval_68"]
            print(f"| {r['truth']:.2f} | {r['n']} | {r['mean']:.3f} +- {r['std']:.3f} | "
                  f"[{lo:.3f}, {hi:.3f}]{'' if r['in_68'] else ' (misses)'} | "
                  f"{r['naive_mean']:.3f} +- {r['naive_std']:.3f} |")
    if not math.isfinite(results["tta"]["mae"]):
        raise SystemExit("non-finite MAE")
    write_json_atomic(args.out, report)
    print(f"\nwrote {args.out}")
    return report


if __name__ == "__main__":
    main()
