"""Where-map localisation: how often each detector's map peaks on the true substructure.

For each preset: ``--n-train`` normal simulations train every detector (``train_run``, the
path of `darklens train`; 10% of them validate), then ``--n-test`` cdm and vortex simulations
(another seed) get their where-maps (:mod:`darklens.evaluate.where_maps`: the detector's own
map, or the occlusion saliency of its score). A map's peak (after a 1-pixel Gaussian smoothing)
is a hit when it lies within 0.3 arcsec of a true subhalo or of the vortex segment
(:mod:`darklens.evaluate.localisation`); ``chance`` is the rate of a peak placed at random.

    python benchmarks/where_maps.py --presets demo,model-a64 \\
        --out benchmarks/results/where_maps.json
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from _record import finish, header  # benchmarks/_record.py, beside this script
from darklens.data.dataset import ImageDataset, Normaliser
from darklens.evaluate.localisation import RADIUS, localisation
from darklens.evaluate.where_maps import where_map_kind, where_maps
from darklens.fit.instrument import from_preset
from darklens.simulate.presets import Preset, get_preset
from darklens.simulate.simulator import simulate_dataset
from darklens.train.run import train_run

DETECTORS = "dcae,cvae,aae,rbm,deep-svdd,knn,infotheoretic,residual-chi2"
PRESET_SETS = {"model-a64": ("model-a", {"n_pix": "64", "pixel_scale": str(0.05 * 150 / 64)})}


def preset_for(name: str) -> Preset:
    """A preset by name, ``model-a64`` (Model A at 64x64 over 7.5 arcsec) included."""
    base, changes = PRESET_SETS.get(name, (name, None))
    return get_preset(base, changes)


def detector_options(name: str, preset: Preset) -> dict:
    """What `darklens train` would pass: the instrument and prior of a fitting detector."""
    if name == "residual-chi2":
        return {"instrument": from_preset(preset).to_dict(), "prior": preset.to_dict(),
                "seed": 0}
    return {}


def run_preset(name: str, args: argparse.Namespace) -> list[dict]:
    preset = preset_for(name)
    train = simulate_dataset(preset, args.n_train, seed=args.seed, classes=("no_sub",))
    test = simulate_dataset(preset, args.n_test, seed=args.seed + 1000,
                            classes=("cdm", "vortex"))
    norm = Normaliser("minmax")
    n_val = max(1, len(train) // 10)
    train_set = ImageDataset(train, np.arange(n_val, len(train)), norm)
    val_set = ImageDataset(train, np.arange(n_val), norm)
    kinds = [test.class_names[int(k)] for k in test.labels]
    x = norm(test.images)
    rows = []
    for det in [d.strip() for d in args.detectors.split(",") if d.strip()]:
        t0 = time.perf_counter()
        overrides = {"progress": False}
        if args.epochs:
            overrides["epochs"] = args.epochs
        run = train_run(det, detector_options(det, preset), {}, train_set, val_set,
                        image_size=preset.n_pix, in_channels=1, seed=args.seed,
                        overrides=overrides)
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        kind = where_map_kind(run.detector, torch.as_tensor(x[:1]))
        maps = where_maps(run.detector, x)
        res = localisation(maps, test.metadata, kinds, preset.pixel_scale, RADIUS)
        rows.append({"preset": name, "detector": det, "map": kind,
                     "epochs": run.result.epochs_run, "train_seconds": train_s,
                     "map_seconds": time.perf_counter() - t0, **{k: res[k] for k in res}})
        print(f"{name:>10} {det:>14} ({kind:>9}): hit rate cdm {res['cdm']['hit_rate']:.3f} "
              f"(chance {res['cdm']['chance']:.3f}), vortex {res['vortex']['hit_rate']:.3f} "
              f"(chance {res['vortex']['chance']:.3f}); train {train_s:.0f} s, maps "
              f"{rows[-1]['map_seconds']:.0f} s", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", default="demo,model-a64")
    p.add_argument("--detectors", default=DETECTORS)
    p.add_argument("--n-train", type=int, default=1500, help="normal training images")
    p.add_argument("--n-test", type=int, default=100, help="test images per anomaly class")
    p.add_argument("--epochs", type=int, default=10, help="0: each detector's default")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="JSON results file")
    args = p.parse_args(argv)
    start = time.perf_counter()
    rows = []
    for name in [s.strip() for s in args.presets.split(",") if s.strip()]:
        rows.extend(run_preset(name, args))
    print()
    print("| preset | detector | map | cdm hit rate (chance) | vortex hit rate (chance) |")
    print("|---|---|---|---:|---:|")
    for r in rows:
        print(f"| {r['preset']} | {r['detector']} | {r['map']} | {r['cdm']['hit_rate']:.2f} "
              f"({r['cdm']['chance']:.2f}) | {r['vortex']['hit_rate']:.2f} "
              f"({r['vortex']['chance']:.2f}) |")
    finish(args.out, {**header("where_maps", args, omit=("out",)), "radius_arcsec": RADIUS,
                      "rows": rows, "seconds": time.perf_counter() - start})
    return 0


if __name__ == "__main__":
    sys.exit(main())
