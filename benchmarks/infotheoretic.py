"""Ablations of the infotheoretic detector next to the baselines, on identical data and budget.

Protocol (per preset): train on ``--n-train`` no_sub images (10% held out as normal validation
data for early stopping and the label-free choices), test on ``--n-test`` images of each class
(no_sub, cdm, vortex) simulated with a different seed. Every run reports the test AUROC of every
score of the detector (all anomalies together, cdm, vortex), the score chosen without labels,
and its label-free criteria. Presets: ``demo`` and ``model-a64`` (DeepLense Model A-like, 64x64,
same field of view as the 150x150 original).

Groups (``--groups``): default, beta, penalty, critic, entropy, temperature, batch, augment,
hybrid, semi (labelled anomalies: 10/50/250 per class, and cdm-only labels tested on vortex),
baselines (every other registered detector, same data, epochs and seeds).

    python benchmarks/infotheoretic.py --smoke                      # about a minute
    python benchmarks/infotheoretic.py --preset demo --budget-minutes 30 --seeds 3

Runs go in rounds (all configs for seed 0, then seed 1, ...) so that a budget cut leaves
complete comparisons; runs that did not fit are listed as skipped. Simulated data are cached in
``runs/bench-cache``. Prints a table and writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

from darklens.data.lensdata import CLASSES, LensData
from darklens.evaluate.metrics import anomaly_metrics
from darklens.io import write_json_atomic
from darklens.models.base import create_detector, list_detectors
from darklens.models.infotheoretic import CollapseWarning
from darklens.train.loop import TrainConfig, fit

GROUPS = ("default", "beta", "penalty", "critic", "entropy", "temperature", "batch", "augment",
          "hybrid", "semi", "baselines")


@dataclass
class Run:
    group: str
    label: str
    detector: str = "infotheoretic"
    config: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    labelled: dict[str, int] = field(default_factory=dict)  # class -> number of labelled images


def ablation_runs(groups: tuple[str, ...]) -> list[Run]:
    """Every configuration of the requested groups, in priority order."""
    runs: list[Run] = []
    if "default" in groups:
        runs.append(Run("default", "infotheoretic (default)"))
    if "baselines" in groups:
        runs += [Run("baselines", name, detector=name) for name in list_detectors()
                 if name != "infotheoretic"]
    if "beta" in groups:
        runs += [Run("beta", f"beta={b:g}", config={"beta": b})
                 for b in (0.0, 1e-4, 1e-3, 1e-1, 1.0)]  # 1e-2 is the default
    if "penalty" in groups:
        runs.append(Run("penalty", "penalty=l1", config={"penalty": "l1"}))
    if "critic" in groups:
        runs += [Run("critic", "critic=bilinear raw",
                     config={"critic": "bilinear", "normalize": False}),
                 Run("critic", "critic=bilinear normalised",
                     config={"critic": "bilinear", "normalize": True}),
                 Run("critic", "critic=mlp", config={"critic": "mlp", "normalize": True})]
    if "entropy" in groups:
        runs.append(Run("entropy", "entropy on backbone", config={"entropy_on": "backbone"}))
    if "temperature" in groups:
        runs += [Run("temperature", f"temperature={t:g}", config={"temperature": t})
                 for t in (0.1, 0.5)]
    if "batch" in groups:
        runs += [Run("batch", f"batch={b}", train={"batch_size": b}) for b in (64, 256)]
    if "augment" in groups:
        runs += [Run("augment", f"augment={a}", config={"augment": a})
                 for a in ("none", "geometric", "geometric+noise")]
    if "hybrid" in groups:
        runs += [Run("hybrid", "hybrid: SVDD centre", config={"center": True}),
                 Run("hybrid", "hybrid: + AE decoder", config={"recon_weight": 1.0})]
    if "semi" in groups:
        runs += [Run("semi", f"semi: {n} labelled per class", config={"score": "norm"},
                     labelled={"cdm": n, "vortex": n}) for n in (10, 50, 250)]
        runs.append(Run("semi", "semi: 50 cdm only (unseen vortex)", config={"score": "norm"},
                        labelled={"cdm": 50}))
    return runs


def preset_for(name: str):
    """A preset by name; ``model-a64`` is Model A at 64x64 over the same field of view."""
    from darklens.simulate.presets import get_preset

    if name == "model-a64":
        return get_preset("model-a", {"n_pix": "64", "pixel_scale": str(0.05 * 150 / 64)})
    return get_preset(name)


def simulate(preset: str, n_per_class: int, seed: int, classes: tuple[str, ...],
             cache: Path) -> LensData:
    """Simulated images, cached as a plain .npz (no pickle) keyed by everything that matters."""
    from darklens.simulate.simulator import simulate_dataset

    path = cache / f"{preset}-{'+'.join(classes)}-n{n_per_class}-s{seed}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as f:
            return LensData(images=f["images"], labels=f["labels"])
    data = simulate_dataset(preset_for(preset), n_per_class, seed, classes=classes)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, images=data.images, labels=data.labels)
    tmp.replace(path)
    return LensData(images=data.images, labels=data.labels)


def _auroc_table(scores: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, dict]:
    out = {}
    for name, s in scores.items():
        if not np.isfinite(s).all():
            out[name] = None
            continue
        m = anomaly_metrics(s, labels)
        out[name] = {"auroc": m["auroc"], "tpr_at_fpr_0.01": m["tpr_at_fpr_0.01"]}
    return out


def execute(run: Run, seed: int, data: dict[str, Any], epochs: int,
            curves: bool = False) -> dict[str, Any]:
    """Train one configuration on one seed; evaluate every score on the test set."""
    det = create_detector(run.detector, **({**run.config, "seed": seed}
                                           if run.detector == "infotheoretic" else run.config))
    cfg = {**type(det).train_defaults, "epochs": epochs, "seed": seed, "progress": False,
           **run.train}
    if run.labelled:
        parts = [data["labelled"][c][:n] for c, n in run.labelled.items()]
        det.set_labelled_anomalies(torch.as_tensor(np.concatenate(parts)))
    test_x = torch.as_tensor(data["test"].images)
    curve: list[dict[str, float]] = []

    def on_epoch_end(epoch: int, row: dict[str, float]) -> None:
        if not curves:
            return
        det.fit_end(data["train_images"].split(256), data["val_images"].split(256))
        s = det.score_all(test_x)
        curve.append({"epoch": epoch, "seconds": time.perf_counter() - t0,
                      **{f"auroc_{k}": anomaly_metrics(v.numpy(), data["test"].labels)[
                          "auroc"]["all"] for k, v in s.items()}})

    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CollapseWarning)
        result = fit(det, data["train"], data["val"], TrainConfig.from_dict(cfg),
                     on_epoch_end=on_epoch_end)
    seconds = time.perf_counter() - t0
    det.eval()
    labels = data["test"].labels
    if hasattr(det, "score_all"):
        scores = {k: v.double().numpy() for k, v in det.score_all(test_x).items()}
        default = det.default_score
        diag = det.diagnostics()
    else:
        scores = {"score": torch.cat([det.score(c) for c in test_x.split(256)]).double().numpy()}
        default, diag = "score", {}
    return {
        "group": run.group, "label": run.label, "detector": run.detector, "seed": seed,
        "config": run.config, "train": cfg, "labelled": run.labelled,
        "seconds": seconds, "epochs_run": result.epochs_run,
        "scores": _auroc_table(scores, labels), "default_score": default,
        "diagnostics": diag,
        "warnings": [str(w.message) for w in caught if issubclass(w.category, CollapseWarning)],
        "curve": curve,
    }


def load_data(preset: str, n_train: int, n_test: int, n_labelled: int, cache: Path,
              seed: int = 0) -> dict[str, Any]:
    train = simulate(preset, n_train, 1000 + seed, ("no_sub",), cache)
    test = simulate(preset, n_test, 2000 + seed, CLASSES, cache)
    x = torch.as_tensor(train.images)
    n_val = max(2, n_train // 10)
    out: dict[str, Any] = {
        "train": TensorDataset(x[n_val:]), "val": TensorDataset(x[:n_val]),
        "train_images": x[n_val:], "val_images": x[:n_val], "test": test,
    }
    if n_labelled:
        lab = simulate(preset, n_labelled, 3000 + seed, ("cdm", "vortex"), cache)
        out["labelled"] = {c: lab.images[lab.labels == CLASSES.index(c)] for c in ("cdm", "vortex")}
    return out


def _fmt(values: list[float]) -> str:
    if not values:
        return "-"
    m = float(np.mean(values))
    return f"{m:.3f}" if len(values) == 1 else f"{m:.3f}±{float(np.std(values)):.3f}"


def summarise(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (preset, label): the default score's AUROC (mean ± std over seeds) etc."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for r in records:
        if "scores" not in r:
            continue
        key = (r["preset"], r["label"])
        row = rows.setdefault(key, {"preset": r["preset"], "group": r["group"],
                                    "label": r["label"], "runs": [], })
        row["runs"].append(r)
    table = []
    for row in rows.values():
        runs = row.pop("runs")

        def pick(run: dict, score: str, cls: str) -> float | None:
            s = run["scores"].get(score)
            return None if s is None else s["auroc"][cls]

        out = dict(row, seeds=len(runs))
        for cls in ("all", "cdm", "vortex"):
            vals = [pick(r, r["default_score"], cls) for r in runs]
            out[f"auroc_{cls}"] = [v for v in vals if v is not None]
        for score in ("norm", "neg_norm", "knn", "critic"):
            vals = [pick(r, score, "all") for r in runs if score in r["scores"]]
            out[f"{score}_all"] = [v for v in vals if v is not None]
        out["selected"] = sorted({r["default_score"] for r in runs})
        out["pseudo_auroc"] = [r["diagnostics"].get("pseudo_auroc", {}).get(r["default_score"])
                               for r in runs if r["diagnostics"]]
        out["collapsed"] = sum(bool(r["diagnostics"].get("collapsed")) for r in runs)
        out["seconds"] = float(np.mean([r["seconds"] for r in runs]))
        table.append(out)
    return table


def print_table(table: list[dict[str, Any]]) -> None:
    head = (f"{'preset':<10} {'configuration':<36} {'n':>2} {'AUROC all':>12} {'cdm':>12} "
            f"{'vortex':>12} {'score':<9} {'norm':>6} {'-norm':>6} {'knn':>6} {'critic':>6} "
            f"{'pseudo':>6} {'coll':>4} {'s':>5}")
    print(head)
    print("-" * len(head))
    def one(t: dict[str, Any], key: str) -> str:
        return f"{np.mean(t[key]):.3f}" if t[key] else "-"

    for t in table:
        pseudo = [p for p in t["pseudo_auroc"] if p is not None]
        print(f"{t['preset']:<10} {t['label'][:36]:<36} {t['seeds']:>2} "
              f"{_fmt(t['auroc_all']):>12} {_fmt(t['auroc_cdm']):>12} "
              f"{_fmt(t['auroc_vortex']):>12} {','.join(t['selected'])[:9]:<9} "
              f"{one(t, 'norm_all'):>6} {one(t, 'neg_norm_all'):>6} {one(t, 'knn_all'):>6} "
              f"{one(t, 'critic_all'):>6} {(f'{np.mean(pseudo):.3f}' if pseudo else '-'):>6} "
              f"{t['collapsed']:>4} {t['seconds']:>5.0f}")


def label_free_pick(table: list[dict[str, Any]]) -> dict[str, Any]:
    """Per preset, the unsupervised infotheoretic configuration with the best pseudo-AUROC."""
    picks = {}
    for preset in sorted({t["preset"] for t in table}):
        cands = [t for t in table if t["preset"] == preset
                 and t["group"] not in ("baselines", "semi") and t["pseudo_auroc"]
                 and all(p is not None for p in t["pseudo_auroc"])]
        if cands:
            best = max(cands, key=lambda t: float(np.mean(t["pseudo_auroc"])))
            picks[preset] = {"label": best["label"],
                             "pseudo_auroc": float(np.mean(best["pseudo_auroc"])),
                             "test_auroc_all": float(np.mean(best["auroc_all"]))}
    return picks


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", action="append", choices=("demo", "model-a64"),
                   help="repeatable; default: demo and model-a64")
    p.add_argument("--groups", default=",".join(GROUPS),
                   help=f"comma-separated subset of {','.join(GROUPS)}")
    p.add_argument("--n-train", type=int, default=1000, help="no_sub training images")
    p.add_argument("--n-test", type=int, default=500, help="test images per class")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--budget-minutes", type=float, default=60.0,
                   help="stop starting new runs after this much wall time")
    p.add_argument("--curves", action="store_true",
                   help="learning curve (test AUROC per epoch) for the default config, seed 0")
    p.add_argument("--smoke", action="store_true", help="tiny run (about a minute)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache", default="runs/bench-cache")
    p.add_argument("--out", default="benchmarks/results/infotheoretic.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    presets = args.preset or ["demo", "model-a64"]
    groups = tuple(g for g in args.groups.split(",") if g)
    unknown = set(groups) - set(GROUPS)
    if unknown:
        p.error(f"unknown group(s): {', '.join(sorted(unknown))}")
    if args.smoke:
        presets = args.preset or ["model-a64"]
        args.n_train, args.n_test, args.epochs, args.seeds = 400, 100, 3, 1
        runs = [Run("default", "infotheoretic (default)"),
                Run("critic", "critic=bilinear raw",
                    config={"critic": "bilinear", "normalize": False}),
                Run("semi", "semi: 10 labelled per class", config={"score": "norm"},
                    labelled={"cdm": 10, "vortex": 10}),
                Run("baselines", "deep-svdd", detector="deep-svdd"),
                Run("baselines", "knn", detector="knn")]
    else:
        runs = ablation_runs(groups)
    n_labelled = max([max(r.labelled.values()) for r in runs if r.labelled] or [0])
    start = time.perf_counter()
    budget = args.budget_minutes * 60
    records: list[dict[str, Any]] = []
    cache = Path(args.cache)
    datasets = {}
    for preset in presets:
        t = time.perf_counter()
        datasets[preset] = load_data(preset, args.n_train, args.n_test, n_labelled, cache)
        print(f"[{preset}] data ready in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    for seed in range(args.seeds):
        for preset in presets:
            for run in runs:
                meta = {"preset": preset, "group": run.group, "label": run.label, "seed": seed}
                if time.perf_counter() - start > budget:
                    records.append({**meta, "skipped": "budget"})
                    continue
                rec = execute(run, seed, datasets[preset], args.epochs,
                              curves=args.curves and seed == 0 and run.group == "default")
                rec["preset"] = preset
                records.append(rec)
                d = rec["scores"].get(rec["default_score"]) or {}
                auroc = d.get("auroc", {})
                print(f"[{preset} seed {seed}] {run.label}: {rec['default_score']} AUROC "
                      f"all {auroc.get('all', math.nan):.3f} cdm {auroc.get('cdm', math.nan):.3f}"
                      f" vortex {auroc.get('vortex', math.nan):.3f} ({rec['seconds']:.0f} s)",
                      file=sys.stderr)
    table = summarise(records)
    print_table(table)
    picks = label_free_pick(table)
    for preset, pick in picks.items():
        print(f"label-free pick on {preset}: {pick['label']} (pseudo-AUROC "
              f"{pick['pseudo_auroc']:.3f}) -> test AUROC {pick['test_auroc_all']:.3f}")
    skipped = [r for r in records if r.get("skipped")]
    if skipped:
        print(f"{len(skipped)} runs skipped for the time budget")
    write_json_atomic(args.out, {
        "command": " ".join(["python", "benchmarks/infotheoretic.py", *(argv or sys.argv[1:])]),
        "args": vars(args), "torch_threads": torch.get_num_threads(),
        "wall_seconds": time.perf_counter() - start, "table": table, "label_free_pick": picks,
        "records": records,
    })
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
