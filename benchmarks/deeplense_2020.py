"""Reproduce DeepLense's 2020 unsupervised baselines on the built-in `model-a` simulator.

Protocol (DeepLense, `unsupervised-lensing` 2020): train on images without substructure
(no_sub) only; test on 2500 no_sub against 1250 cdm + 1250 vortex; AUROC from per-image
reconstruction MSE (RBM: free energy by default, and the reconstruction MSE that DeepLense's
published RBM scores are). Training images and test images are simulated from different seeds
(independent draws); 10% of the training images are held out as normal validation images
(reported, not used for early stopping: DeepLense kept the final weights).

Modes:
  --mode full   150x150 (the preset's own grid), DeepLense's epochs (50) and batch (100); for a
                GPU (``--device auto``). Training-set size: --n-train (default 25000, our choice:
                DeepLense's package does not state theirs).
  --mode cpu    64x64 with the same field of view (0.1171875"/px), 2000 training images, 20
                epochs, the full 2500/1250/1250 test set: at most ~20 minutes on 2 CPU cores.
  --mode smoke  64x64, 200 training images, 2 epochs, 100/50/50 test images: about a minute.

Prints our AUROCs beside the published Model A values and writes JSON (--out).

    python benchmarks/deeplense_2020.py --mode cpu --out benchmarks/results/deeplense_2020_cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from darklens import __version__
from darklens.data.dataset import ImageDataset, Normaliser
from darklens.data.lensdata import LensData
from darklens.evaluate.metrics import anomaly_metrics
from darklens.io import write_json_atomic
from darklens.models.base import create_detector
from darklens.models.scoring import score_images
from darklens.simulate.presets import get_preset
from darklens.simulate.simulator import simulate_dataset
from darklens.train.loop import TrainConfig, fit
from darklens.train.rng import seed_everything

# DeepLense's README / our recomputation from their published scores (Model A): all/cdm/vortex.
PUBLISHED_MODEL_A = {
    "aae": (0.933, 0.893, 0.974),
    "cvae": (0.901, 0.858, 0.944),
    "dcae": (0.729, 0.683, 0.774),
    "rbm": (0.513, 0.506, 0.519),
}

MODES = {
    "full": {"n_pix": 150, "n_train": 25000, "n_test_normal": 2500, "n_test_anomaly": 1250,
             "epochs": None, "batch_size": 100},
    "cpu": {"n_pix": 64, "n_train": 2000, "n_test_normal": 2500, "n_test_anomaly": 1250,
            "epochs": 20, "batch_size": 100},
    "smoke": {"n_pix": 64, "n_train": 200, "n_test_normal": 100, "n_test_anomaly": 50,
              "epochs": 2, "batch_size": 50},
}


def preset_for(n_pix: int, overrides: dict[str, str] | None = None):
    """`model-a`, resampled to ``n_pix`` pixels over the same field of view (+ overrides)."""
    base = get_preset("model-a")
    changes = dict(overrides or {})
    if n_pix != base.n_pix:
        changes.update(n_pix=str(n_pix), pixel_scale=repr(base.pixel_scale * base.n_pix / n_pix))
    return get_preset("model-a", changes or None)


def simulate_sets(mode: dict, seed: int,
                  overrides: dict[str, str] | None = None) -> tuple[LensData, LensData]:
    """(training no_sub images, test set) from independent seeds."""
    preset = preset_for(mode["n_pix"], overrides)
    train = simulate_dataset(preset, mode["n_train"], seed=seed, classes=("no_sub",))
    normal = simulate_dataset(preset, mode["n_test_normal"], seed=seed + 1, classes=("no_sub",))
    anomal = simulate_dataset(preset, mode["n_test_anomaly"], seed=seed + 1,
                              classes=("cdm", "vortex"))
    test = LensData(images=np.concatenate([normal.images, anomal.images]),
                    labels=np.concatenate([normal.labels, anomal.labels]))
    return train, test


def run_detector(name: str, train: LensData, test: LensData, mode: dict, args) -> dict:
    normaliser = Normaliser("minmax")  # DeepLense: every image min-max scaled to [0, 1]
    n = len(train)
    n_val = max(1, n // 10)
    train_set = ImageDataset(train, np.arange(n_val, n), normaliser)
    val_set = ImageDataset(train, np.arange(n_val), normaliser)
    seed_everything(args.seed)
    size = mode["n_pix"]
    det_cfg = {"n_hidden": 1000} if name == "rbm" else {}
    det = create_detector(name, image_size=size, **det_cfg)
    values = {k: v for k, v in det.train_defaults.items()
              if k in ("lr", "weight_decay", "scheduler", "epochs")}
    if mode["epochs"] is not None:
        values["epochs"] = mode["epochs"]
    if args.epochs is not None:
        values["epochs"] = args.epochs
    cfg = TrainConfig(**values, batch_size=mode["batch_size"], seed=args.seed,
                      restore_best=False, device=args.device, progress=not args.no_progress)
    t0 = time.perf_counter()
    result = fit(det, train_set, val_set, cfg)
    train_s = time.perf_counter() - t0
    x_test = normaliser(test.images)
    t0 = time.perf_counter()
    scores = {"default": score_images(det, x_test, device=cfg.device)}
    if name == "rbm":  # also DeepLense's kind of RBM score
        det.config["score"] = "reconstruction"
        scores["reconstruction"] = score_images(det, x_test, device=cfg.device)
        det.config["score"] = "free-energy"
    score_s = time.perf_counter() - t0
    out = {
        "detector": name,
        "config": det.config,
        "train": asdict(cfg),
        "n_train": len(train_set),
        "epochs_run": result.epochs_run,
        "final_val_loss": result.history[-1].get("val_loss") if result.history else None,
        "train_seconds": train_s,
        "score_seconds": score_s,
        "images_per_second": len(train_set) * max(result.epochs_run, 1) / train_s,
    }
    for key, s in scores.items():
        out["metrics" if key == "default" else f"metrics_{key}"] = anomaly_metrics(
            s, test.labels, test.class_names)
    return out


def table(results: list[dict]) -> str:
    head = f"{'detector':<22}{'ours all / cdm / vortex':<28}{'DeepLense 2020 (Model A)':<28}" \
           f"{'train s':>8}"
    lines = [head, "-" * len(head)]
    for r in results:
        for key in [k for k in r if k.startswith("metrics")]:
            a = r[key]["auroc"]
            label = r["detector"] + ("" if key == "metrics" else f" ({key[8:]})")
            pub = PUBLISHED_MODEL_A.get(r["detector"])
            pub_s = " / ".join(f"{v:.3f}" for v in pub) if pub else "-"
            lines.append(f"{label:<22}{a['all']:.3f} / {a['cdm']:.3f} / {a['vortex']:.3f}"
                         f"{'':<7}{pub_s:<28}{r['train_seconds']:>8.0f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=sorted(MODES), default="cpu")
    p.add_argument("--smoke", action="store_true", help="same as --mode smoke")
    p.add_argument("--detectors", default="aae,cvae,dcae,rbm,deep-svdd,knn")
    p.add_argument("--n-train", type=int)
    p.add_argument("--epochs", type=int, help="override every detector's epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE", default=[],
                   help="override a model-a preset field (as `darklens simulate --set`)")
    p.add_argument("--out", help="JSON file to write")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    mode_name = "smoke" if args.smoke else args.mode
    mode = dict(MODES[mode_name])
    if args.n_train:
        mode["n_train"] = args.n_train

    t0 = time.perf_counter()
    overrides = dict(item.split("=", 1) for item in args.set)
    train, test = simulate_sets(mode, args.seed, overrides)
    sim_s = time.perf_counter() - t0
    print(f"simulated {len(train)} training and {len(test)} test images "
          f"({mode['n_pix']}x{mode['n_pix']}) in {sim_s:.0f} s", flush=True)
    results = []
    for name in [d.strip() for d in args.detectors.split(",") if d.strip()]:
        results.append(run_detector(name, train, test, mode, args))
        r = results[-1]
        print(f"{name}: AUROC all {r['metrics']['auroc']['all']:.3f} "
              f"({r['train_seconds']:.0f} s training)", flush=True)
    print()
    print(table(results))
    report = {
        "benchmark": "deeplense_2020", "mode": mode_name, "protocol": mode, "seed": args.seed,
        "preset_overrides": overrides,
        "published_model_a": PUBLISHED_MODEL_A, "simulate_seconds": sim_s,
        "total_seconds": time.perf_counter() - t0, "results": results,
        "versions": {"darklens": __version__, "torch": torch.__version__,
                     "python": sys.version.split()[0], "machine": platform.platform(),
                     "threads": torch.get_num_threads()},
    }
    if args.out:
        write_json_atomic(Path(args.out), report)
        print(f"\nwrote {args.out}")
    else:
        print(json.dumps({"total_seconds": report["total_seconds"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
