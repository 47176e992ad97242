"""Refit-then-detect benchmark: the smooth-lens fitter's own targets, and detection with ceilings.

Two parts, each printing a table and writing JSON:

``fitter``: on ``no_sub`` images of each preset (and, with ``--xsim DIR``, of the
lenstronomy-made set of ``benchmarks/cross_simulator.py``), trains the initial-guess network,
fits every image on ``--threads`` threads (after a warm-up fit of two images, which compiles the
renderer; its seconds are recorded apart) and reports fitted images per CPU-second of the
process (one core's throughput, even on a machine other jobs share) and per wall-second, the median
reduced chi-square and how often the fitted Einstein radius is within 1% of the truth::

    python benchmarks/refit.py fitter --presets demo,model-a64 --n 200 --threads 1 \\
        --xsim runs/xsim --out benchmarks/results/refit-fitter.json

``detect``: simulates a training set of normals and a labelled test set with ``darklens
simulate``, then runs each detector exactly as a user would (``darklens train --data``,
``darklens evaluate``), and puts beside every AUROC the two oracles of
:mod:`darklens.evaluate.ceiling` (the matched-filter ceiling and the whole-image chi-square
oracle that knows the true smooth lens), computed from the test images' ``substructure_chi2``::

    python benchmarks/refit.py detect --preset model-a64 --n-train 300 --n-test 300 \\
        --detectors residual-chi2,knn --out benchmarks/results/refit-model-a64.json

(``--extra NAME='ARGS'`` passes more ``darklens train`` arguments to one detector, e.g.
``--extra infotheoretic='--input residual'``: a learned detector on the fit's residual maps.)

``statistics``: the residual-chi2 detector trained in-process, every test image fitted once,
and the AUROC of each of its statistics alone and combined, so that a table can say which part
does the work (on fixed-lens presets the fitted macro lens alone can give substructure away)::

    python benchmarks/refit.py statistics --preset model-a64 --n-train 220 --n-test 100 \
        --out benchmarks/results/refit-statistics-model-a64.json

``model-a64`` is ``model-a`` at 64x64 over the same 7.5 arcsec field (as in
``benchmarks/infotheoretic.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from _record import machine, parse_extra  # benchmarks/_record.py, beside this script
from darklens.io import write_json_atomic

ROOT = Path(__file__).resolve().parent.parent
DARKLENS = [sys.executable, "-m", "darklens.cli"]
PRESET_SETS = {"model-a64": ["n_pix=64", f"pixel_scale={0.05 * 150 / 64}"]}


def preset_for(name: str):
    from darklens.simulate.presets import get_preset

    if name in PRESET_SETS:
        base = "model-a" if name == "model-a64" else name
        return get_preset(base, dict(s.split("=") for s in PRESET_SETS[name]))
    return get_preset(name)


def _fit_report(name: str, images: np.ndarray, theta_true: np.ndarray, inst, prior,
                threads: int, guess_images: int, seed: int) -> dict:
    import torch

    from darklens.fit.amortised import train_initial_guess
    from darklens.fit.fitter import FitOptions, fit_smooth_lens

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    net, errors = train_initial_guess(inst, prior, guess_images, 8, seed=seed)
    t_guess = time.perf_counter() - t0
    from darklens.simulate import backend as sim_backend

    t0 = time.perf_counter()  # the first batch compiles the renderer's graphs: timed apart
    fit_smooth_lens(images[:2], inst, FitOptions(moment_starts=1), guess=net)
    t_warm = time.perf_counter() - t0
    before = sim_backend.usage.copy()
    t0, c0 = time.perf_counter(), time.process_time()
    fit = fit_smooth_lens(images, inst, FitOptions(moment_starts=1), guess=net)
    seconds = time.perf_counter() - t0
    # CPU seconds of this process: on a shared machine the wall clock also counts other
    # processes' time, the CPU time only this fit's (with --threads 1, one core's work)
    cpu_seconds = time.process_time() - c0
    rel = np.abs(fit.params["theta_e"] / theta_true - 1)
    return {"data": name, "n": len(fit), "threads": threads, "fit_seconds": seconds,
            "images_per_s_per_thread": len(fit) / seconds / threads,
            "cpu_seconds": cpu_seconds, "images_per_cpu_s": len(fit) / cpu_seconds,
            "load_average": os.getloadavg(),
            "guess_training_seconds": t_guess, "guess_prior": prior.name,
            "warm_up_seconds": t_warm, "renderer": sim_backend.paths_since(before),
            "median_chi2_red": float(np.median(fit.chi2_red)),
            "p90_chi2_red": float(np.percentile(fit.chi2_red, 90)),
            "theta_e_within_1pct": float(np.mean(rel < 0.01)),
            "theta_e_median_rel_error": float(np.median(rel)),
            "n_converged": int(fit.converged.sum()), "instrument": inst.to_dict(),
            "guess_validation_mae": errors}


def run_fitter(args: argparse.Namespace) -> int:
    from darklens.fit.amortised import generic_prior
    from darklens.fit.instrument import Instrument, from_preset
    from darklens.simulate.simulator import simulate_dataset

    rows = []
    for name in [p for p in args.presets.split(",") if p]:
        preset = preset_for(name)
        data = simulate_dataset(preset, args.n, seed=args.seed + 7, classes=("no_sub",))
        rows.append(_fit_report(name, data.images, data.metadata["theta_e"],
                                from_preset(preset), preset, args.threads, args.guess_images,
                                args.seed))
        print(json.dumps({k: rows[-1][k] for k in ("data", "images_per_s_per_thread",
                                                      "median_chi2_red")}))
    if args.xsim:
        images, theta = _xsim_normals(Path(args.xsim), args.n)
        inst = Instrument(n_pix=images.shape[-1], pixel_scale=args.xsim_pixel_scale)
        rows.append(_fit_report("cross-simulator", images, theta, inst, generic_prior(inst),
                                args.threads, args.guess_images, args.seed))
    _fitter_table(rows)
    write_json_atomic(args.out, {"benchmark": "refit fitter", "command": " ".join(sys.argv),
                          "machine": machine(), "rows": rows})
    print(f"wrote {args.out}")
    return 0


def _xsim_normals(root: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Test no_sub images of a cross_simulator set and their true Einstein radii."""
    import csv

    from darklens.data.formats import load_dataset

    full = load_dataset(root / "test")
    keep = np.flatnonzero(full.labels == full.class_names.index("no_sub"))
    data = full.select(keep)  # attrs["files"] still lists every file: index it by keep
    truth = {r["file"]: float(r["theta_E"]) for r in csv.DictReader(open(root / "truth.csv"))
             if r["split"] == "test" and r["class"] == "no_sub"}
    files = [str(full.attrs["files"][i]) for i in keep]
    theta = np.array([truth[_match(f, truth)] for f in files])
    return data.images[:n], theta[:n]


def _match(name: str, truth: dict) -> str:
    for key in truth:
        if Path(key).name == Path(name).name:
            return key
    raise KeyError(name)


def _fitter_table(rows: list[dict]) -> None:
    print("| data | images per CPU-s | images/s per thread (wall) | median chi2_red | p90 | "
          "theta_E within 1% | median theta_E error | converged |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['data']} | {r['images_per_cpu_s']:.2f} | "
              f"{r['images_per_s_per_thread']:.2f} | "
              f"{r['median_chi2_red']:.3f} | {r['p90_chi2_red']:.3f} | "
              f"{r['theta_e_within_1pct']:.2f} | {r['theta_e_median_rel_error']:.4f} | "
              f"{r['n_converged']}/{r['n']} |")


# -- detection --------------------------------------------------------------------------------
def _cli(argv: list[str]) -> float:
    print("$ darklens " + " ".join(argv), flush=True)
    t0 = time.perf_counter()
    subprocess.run(DARKLENS + argv, check=True, cwd=ROOT)
    return time.perf_counter() - t0


def run_detect(args: argparse.Namespace) -> int:
    from darklens.data.formats import load_dataset
    from darklens.evaluate.ceiling import ceiling_table

    root = Path(args.work) / args.preset
    base = "model-a" if args.preset == "model-a64" else args.preset
    sets = [x for s in PRESET_SETS.get(args.preset, []) for x in ("--set", s)]
    train, test = root / "train", root / "test"
    t_sim = _cli(["simulate", "--preset", base, "--n-per-class", str(args.n_train),
                  "--classes", "no_sub", "--out", str(train), "--seed", str(args.seed), *sets])
    t_sim += _cli(["simulate", "--preset", base, "--n-per-class", str(args.n_test),
                   "--out", str(test), "--seed", str(args.seed + 1000), *sets])
    data = load_dataset(test)
    ceiling = ceiling_table(data.labels, data.class_names,
                            data.metadata["substructure_chi2"], data.images[0, 0].size)
    result = {"benchmark": "refit detect", "preset": args.preset, "command": " ".join(sys.argv),
              "machine": machine(), "n_train": args.n_train, "n_test_per_class": args.n_test,
              "simulate_seconds": t_sim, "ceiling": ceiling, "detectors": {}}
    extras = parse_extra(args.extra)
    for name in [d for d in args.detectors.split(",") if d]:
        run = root / "runs" / name
        extra = ["--config", args.config] if args.config and name == "residual-chi2" else []
        extra += extras.get(name, [])
        t_train = _cli(["train", "--detector", name, "--data", str(train), "--out", str(run),
                        "--test-fraction", "0", "--no-progress", "--seed", str(args.seed),
                        *(["--epochs", str(args.epochs)] if args.epochs else []), *extra])
        t_eval = _cli(["evaluate", str(run), "--data", str(test)])
        metrics = json.loads((run / "metrics.json").read_text())
        result["detectors"][name] = {"auroc": metrics["auroc"], "train_seconds": t_train,
                                     "extra": extra,
                                     "evaluate_seconds": t_eval,
                                     "not_scored": metrics.get("not_scored")}
        write_json_atomic(args.out, result)
    _detect_table(result)
    print(f"wrote {args.out}")
    return 0


def _detect_table(result: dict) -> None:
    c, o = result["ceiling"]["ceiling"], result["ceiling"]["chi2_oracle"]
    print(f"\n{result['preset']}: AUROC all / cdm / vortex")
    print("| detector | all | cdm | vortex | train + evaluate s |")
    print("|---|---:|---:|---:|---:|")
    for name, r in result["detectors"].items():
        a = r["auroc"]
        print(f"| {name} | {a['all']:.3f} | {a['cdm']:.3f} | {a['vortex']:.3f} | "
              f"{r['train_seconds'] + r['evaluate_seconds']:.0f} |")
    print(f"| ceiling (matched filter) | {c['all']:.3f} | {c['cdm']:.3f} | {c['vortex']:.3f} | |")
    print(f"| chi2 oracle (true smooth lens) | {o['all']:.3f} | {o['cdm']:.3f} | "
          f"{o['vortex']:.3f} | |")


def run_statistics(args: argparse.Namespace) -> int:
    import torch
    from sklearn.metrics import roc_auc_score

    from darklens.fit.instrument import from_preset
    from darklens.models.base import create_detector
    from darklens.models.residual_chi2 import STAT_KEYS
    from darklens.simulate.simulator import simulate_dataset

    torch.manual_seed(args.seed)
    preset = preset_for(args.preset)
    train = simulate_dataset(preset, args.n_train, seed=args.seed, classes=("no_sub",))
    test = simulate_dataset(preset, args.n_test, seed=args.seed + 1000)
    det = create_detector("residual-chi2", image_size=preset.n_pix,
                          instrument=from_preset(preset).to_dict(), prior=preset.to_dict(),
                          seed=args.seed, calibration_images=args.n_train,
                          combine=["local", "params", "perturber"])
    t0 = time.perf_counter()
    det.fit_start([torch.as_tensor(train.images)])
    fit = det.fit_residuals(test.images)
    stats = det._statistics(fit, test.images, perturber=True)
    seconds = time.perf_counter() - t0
    med, scale = det.stat_median.numpy(), det.stat_scale.numpy()
    z = {k: (stats[k] - med[i]) / scale[i] for i, k in enumerate(STAT_KEYS)}
    stats["combined (local, params)"] = np.maximum(z["local"], z["params"])
    stats["combined (local, params, perturber)"] = np.maximum.reduce(
        [z["local"], z["params"], z["perturber"]])
    labels = test.labels
    rows = {}
    for name, values in stats.items():
        rows[name] = {}
        for c, cls in ((1, "cdm"), (2, "vortex")):
            m = (labels == 0) | (labels == c)
            rows[name][cls] = float(roc_auc_score(labels[m] == c, values[m]))
        rows[name]["all"] = float(roc_auc_score(labels != 0, values))
    print(f"\n{args.preset}: AUROC of each residual-chi2 statistic (all / cdm / vortex)")
    print("| statistic | all | cdm | vortex |")
    print("|---|---:|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {r['all']:.3f} | {r['cdm']:.3f} | {r['vortex']:.3f} |")
    write_json_atomic(args.out, {"benchmark": "refit statistics", "preset": args.preset,
                          "command": " ".join(sys.argv), "machine": machine(),
                          "n_train": args.n_train, "n_test_per_class": args.n_test,
                          "seconds": seconds, "auroc": rows,
                          "diagnostics": det.diagnostics()})
    print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="part", required=True)
    f = sub.add_parser("fitter", help="the fitter's speed and accuracy on normal lenses")
    f.add_argument("--presets", default="demo,model-a64")
    f.add_argument("--n", type=int, default=200)
    f.add_argument("--threads", type=int, default=1)
    f.add_argument("--guess-images", type=int, default=4000)
    f.add_argument("--xsim", help="a benchmarks/cross_simulator.py data set folder")
    f.add_argument("--xsim-pixel-scale", type=float, default=0.08)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--out", default="benchmarks/results/refit-fitter.json")
    f.set_defaults(func=run_fitter)
    d = sub.add_parser("detect", help="detectors through the CLI, with ceilings")
    d.add_argument("--preset", default="model-a64")
    d.add_argument("--n-train", type=int, default=300)
    d.add_argument("--n-test", type=int, default=300)
    d.add_argument("--detectors", default="residual-chi2")
    d.add_argument("--epochs", type=int)
    d.add_argument("--config", help="--config for residual-chi2's darklens train")
    d.add_argument("--extra", action="append", default=[], metavar="NAME='ARGS'",
                   help="more darklens train arguments for one detector, e.g. "
                   "--extra infotheoretic='--input residual'")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--work", default="runs/refit")
    d.add_argument("--out", required=True)
    d.set_defaults(func=run_detect)
    st = sub.add_parser("statistics", help="each residual-chi2 statistic alone, one fit")
    st.add_argument("--preset", default="model-a64")
    st.add_argument("--n-train", type=int, default=220)
    st.add_argument("--n-test", type=int, default=100)
    st.add_argument("--seed", type=int, default=0)
    st.add_argument("--out", required=True)
    st.set_defaults(func=run_statistics)
    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
