"""Realised false-positive rate of `darklens score`'s conformal flags on fresh normal simulations.

For each preset and detector: simulate ``--n-train`` normal images, train with `darklens
train` (which holds ``--cal-fraction`` of them out as calibration normals), simulate
``--n-fresh`` new normal images from another seed, score them with `darklens score --fpr A`
and count the share flagged at A = 0.01, 0.05, 0.1. With one fixed calibration set the
expected share is floor(A (n_cal + 1)) / (n_cal + 1) and the spread beta-binomial
(:func:`darklens.evaluate.conformal.realised_fpr_band`); the table gives the 3-sigma band.

    python benchmarks/conformal.py --presets demo,model-a64 --detectors knn,dcae \\
        --out benchmarks/results/conformal.json
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _record import finish, header  # benchmarks/_record.py, beside this script
from darklens.cli import main as cli
from darklens.data.formats import write_shard
from darklens.evaluate.conformal import realised_fpr_band
from darklens.io import read_json_object
from darklens.simulate.presets import Preset, get_preset
from darklens.simulate.simulator import simulate_dataset

TARGETS = (0.01, 0.05, 0.1)
# ``model-a64``: Model A at 64x64 over the same 7.5 arcsec field (as benchmarks/refit.py)
PRESET_SETS = {"model-a64": ("model-a", {"n_pix": "64", "pixel_scale": str(0.05 * 150 / 64)})}
CONFIGS = {"dcae": '{"latent_dim": 64}', "knn": "{}"}


def preset_for(name: str) -> Preset:
    """A preset by name, ``model-a64`` included."""
    base, changes = PRESET_SETS.get(name, (name, None))
    return get_preset(base, changes)


def run_one(root: Path, preset: str, detector: str, args: argparse.Namespace) -> list[dict]:
    """Train ``detector`` on ``preset`` normals, score fresh normals, one row per target."""
    train, fresh, run = root / f"{preset}-train", root / f"{preset}-fresh", \
        root / f"{preset}-{detector}"
    if not train.exists():
        sim = preset_for(preset)
        write_shard(train / "shard.h5", simulate_dataset(sim, args.n_train, seed=args.seed,
                                                         classes=("no_sub",)))
        write_shard(fresh / "shard.h5", simulate_dataset(sim, args.n_fresh,
                                                         seed=args.seed + 1000,
                                                         classes=("no_sub",)))
    t0 = time.perf_counter()
    code = cli(["train", "--detector", detector, "--data", str(train), "--out", str(run),
                "--epochs", str(args.epochs), "--seed", str(args.seed), "--no-progress",
                "--cal-fraction", str(args.cal_fraction), "--val-fraction", "0.1",
                "--test-fraction", "0.05", "--config", CONFIGS.get(detector, "{}")])
    if code != 0:
        raise SystemExit(f"training {detector} on {preset} failed (exit {code})")
    train_s = time.perf_counter() - t0
    n_cal = int(read_json_object(run / "calibration.json", "calibration scores")["n"])
    rows = []
    for target in TARGETS:
        out = root / f"{preset}-{detector}-{target}.csv"
        if cli(["score", str(run), str(fresh), "--fpr", str(target), "--csv", str(out)]) != 0:
            raise SystemExit(f"scoring with {detector} on {preset} failed")
        with open(out, newline="") as fh:
            flagged = np.array([int(r["anomalous"]) for r in csv.DictReader(fh)])
        low, expected, high = realised_fpr_band(target, n_cal, len(flagged), sigmas=3.0)
        realised = float(flagged.mean())
        rows.append({"preset": preset, "detector": detector, "target": target,
                     "n_cal": n_cal, "n_fresh": int(len(flagged)), "realised": realised,
                     "expected": expected, "band_3sigma": [low, high],
                     "within": bool(low <= realised <= high), "train_seconds": train_s})
        print(f"{preset:>10} {detector:>8} target {target:<5} n_cal {n_cal:>5} "
              f"realised {realised:.4f} (expected {expected:.4f}, 3-sigma "
              f"[{low:.4f}, {high:.4f}])", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", default="demo,model-a64")
    p.add_argument("--detectors", default="knn,dcae")
    p.add_argument("--n-train", type=int, default=2000, help="normal images to train on")
    p.add_argument("--cal-fraction", type=float, default=0.25)
    p.add_argument("--n-fresh", type=int, default=5000, help="fresh normal images scored")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", help="where to write data and runs (default: a temp dir)")
    p.add_argument("--out", help="JSON results file")
    args = p.parse_args(argv)
    start = time.perf_counter()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for preset in [s.strip() for s in args.presets.split(",") if s.strip()]:
            for det in [s.strip() for s in args.detectors.split(",") if s.strip()]:
                rows.extend(run_one(Path(tmp), preset, det, args))
    print()
    print("| preset | detector | n_cal | target FPR | realised FPR | expected | 3-sigma band |")
    print("|---|---|---:|---:|---:|---:|---|")
    for r in rows:
        lo, hi = r["band_3sigma"]
        print(f"| {r['preset']} | {r['detector']} | {r['n_cal']} | {r['target']} | "
              f"{r['realised']:.4f} | {r['expected']:.4f} | [{lo:.4f}, {hi:.4f}] |")
    finish(args.out, {**header("conformal", args), "rows": rows,
                      "seconds": time.perf_counter() - start})
    return 0


if __name__ == "__main__":
    sys.exit(main())
