"""Ablations of the infotheoretic detector next to the baselines, on identical data and budget.

Protocol (per preset): train on ``--n-train`` no_sub images (10% held out as normal validation
data for early stopping and the label-free choices), test on ``--n-test`` images of each class
(no_sub, cdm, vortex) simulated with a different seed. Every run reports the test AUROC of every
score of the detector (all anomalies together, cdm, vortex), the score chosen without labels,
and its label-free criteria. Presets: ``demo`` and ``model-a64`` (DeepLense Model A-like, 64x64,
same field of view as the 150x150 original). The defaults were chosen on a separate
development train/test pair (other seeds), never on these test sets.

Rows: ``infotheoretic (default)`` trains on the single noisy images, like every baseline;
``infotheoretic (native views xV)`` trains on the same lenses rendered ``--views`` times by the
simulator (independent noise draws; ``darklens.simulate.views``), which is extra information
the baselines do not get, so ``knn (all V native views in the bank)`` is the matching baseline
(every rendering a separate training image).

Groups (``--groups``): default, beta, penalty, critic, entropy, temperature, batch, augment,
hybrid, semi (0/10/50/250 labelled anomalies per class, and cdm-only labels tested on vortex),
baselines (every other registered detector, same data, epochs and seeds), tradeoff (the beta
curve: the dot critic, whose entropy bound acts on the z it scores, and the seed's cosine form,
over ``TRADEOFF_BETAS``; prints both bounds, the R(z) and kNN AUROC per beta and writes an
information-plane PNG next to the JSON), spatial (the position-aware encoder).

Label-free choice (``--pseudo``): by default the score is chosen on physical pseudo-anomalies,
the validation normals re-rendered with random point masses (``darklens.simulate.pseudo``);
the JSON's ``selection_correlation`` gives, per preset, the Spearman correlation of the test
AUROC with that pseudo-AUROC and with the patch-swap AUROC over every run and score.

    python benchmarks/infotheoretic.py --preset demo --groups tradeoff --seeds 1 --epochs 12 \
        --views 1 --threads 1 --out benchmarks/results/infotheoretic-tradeoff-demo.json

    python benchmarks/infotheoretic.py --smoke                      # about a minute
    python benchmarks/infotheoretic.py --preset demo --seeds 3 --ablation-seeds 1 --epochs 12 \
        --curves --budget-minutes 75 --out benchmarks/results/infotheoretic-demo.json

The main comparison (default, native views, baselines) runs for every seed first, then the
ablations for ``--ablation-seeds`` seeds, so that a budget cut leaves complete comparisons;
runs that did not fit are listed as skipped. The JSON (``--out``) is rewritten after every
run, and ``--resume`` keeps the finished runs of an interrupted one. ``--curves`` records the
test AUROC of every score after each epoch for the default rows of seed 0 (learning curves;
their evaluation time is not counted as training time). Simulated data are cached in
``--cache``, keyed by a hash of the preset.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
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

GROUPS = ("default", "bank", "beta", "penalty", "critic", "entropy", "temperature", "batch",
          "augment", "hybrid", "semi", "baselines", "long", "tradeoff", "spatial")
# The beta curve of the ``tradeoff`` group: the dot critic (entropy bound on the z it scores)
# and the seed's cosine form (the bound on a norm the critic never sees), same betas.
TRADEOFF_BETAS = (0.0, 0.01, 0.1, 0.3, 1.0)


@dataclass
class Run:
    group: str
    label: str
    detector: str = "infotheoretic"
    config: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    labelled: dict[str, int] = field(default_factory=dict)  # class -> number of labelled images
    views: int = 1  # >1: train on that many simulator-native renderings of each training lens
    flatten_views: bool = False  # baselines: every rendering as a separate training image


NATIVE = {"augment": "none"}  # simulator-native views need no augmentation (measured best)
TERM_COLUMNS = ("infonce_bound", "entropy_bound", "semi_term", "recon_term")


def ablation_runs(groups: tuple[str, ...], views: int = 4,
                  baselines: tuple[str, ...] | None = None) -> list[Run]:
    """Every configuration of the requested groups, in priority order."""
    runs: list[Run] = []
    if "default" in groups:
        runs.append(Run("default", "infotheoretic (default)"))
        if views > 1:
            runs.append(Run("default", f"infotheoretic (native views x{views})", config=NATIVE,
                            views=views))
    if "baselines" in groups:
        runs += [Run("baselines", name, detector=name) for name in list_detectors()
                 if name != "infotheoretic" and (baselines is None or name in baselines)]
        if views > 1:
            runs.append(Run("baselines", f"knn (all {views} native views in the bank)",
                            detector="knn", views=views, flatten_views=True))
    if "long" in groups:  # the autoencoders with many more epochs (more wall time than ours)
        runs += [Run("long", f"{name} ({e} epochs)", detector=name, train={"epochs": e})
                 for name, e in (("dcae", 100), ("cvae", 100))]
    if "tradeoff" in groups:
        runs += [Run("tradeoff", f"{form}, beta={b:g}", config={**cfg, "beta": b})
                 for form, cfg in (("dot critic", {"critic": "dot"}),
                                   ("cosine critic (seed form)", {"critic": "cosine"}))
                 for b in TRADEOFF_BETAS]
    if "spatial" in groups:  # the position-aware encoder; no bank turns where orientation is fixed
        spatial = {"encoder": "spatial", "bank_dihedral": False}
        runs += [Run("spatial", "spatial encoder", config=spatial),
                 Run("spatial", "spatial encoder, patch score",
                     config={**spatial, "score": "patch_knn"}),
                 Run("spatial", "spatial encoder, dihedral bank",
                     config={**spatial, "bank_dihedral": True}),
                 Run("spatial", "spatial encoder, dot critic, beta=0.1",
                     config={**spatial, "critic": "dot", "beta": 0.1})]
    if "beta" in groups:
        runs += [Run("beta", f"beta={b:g}", config={"beta": b})
                 for b in (0.0, 1e-4, 1e-3, 1e-1, 1.0)]  # 1e-2 is the default
        runs += [Run("beta", f"entropy on backbone, beta={b:g}",
                     config={"entropy_on": "backbone", "beta": b}) for b in (1e-2, 1.0)]
    if "penalty" in groups:
        runs.append(Run("penalty", "penalty=l1", config={"penalty": "l1"}))
        runs.append(Run("penalty", "penalty=l1, entropy on backbone, beta=1",
                        config={"penalty": "l1", "entropy_on": "backbone", "beta": 1.0}))
    if "critic" in groups:
        runs += [Run("critic", "critic=bilinear raw",
                     config={"critic": "bilinear", "normalise": False}),
                 Run("critic", "critic=bilinear normalised",
                     config={"critic": "bilinear", "normalise": True}),
                 Run("critic", "critic=mlp", config={"critic": "mlp", "normalise": True})]
    if "entropy" in groups:
        runs.append(Run("entropy", "entropy on backbone", config={"entropy_on": "backbone"}))
    if "temperature" in groups:
        runs += [Run("temperature", f"temperature={t:g}", config={"temperature": t})
                 for t in (0.05, 0.2, 0.5)]  # 0.1 is the default
    if "batch" in groups:
        runs += [Run("batch", f"batch={b}", train={"batch_size": b}) for b in (64, 256)]
    if "bank" in groups:
        runs.append(Run("bank", "bank without dihedral turns", config={"bank_dihedral": False}))
        if views > 1:
            runs.append(Run("bank", f"native views x{views}, bank without dihedral turns",
                            config={**NATIVE, "bank_dihedral": False}, views=views))
    if "augment" in groups:
        runs += [Run("augment", f"augment={a}", config={"augment": a})
                 for a in ("none", "dihedral", "geometric", "geometric+noise", "full")]
        if views > 1:
            runs.append(Run("augment", f"native views x{views} + augment=noise",
                            config={"augment": "noise"}, views=views))
    if "hybrid" in groups:
        runs += [Run("hybrid", "hybrid: SVDD centre", config={"center": True}),
                 Run("hybrid", "hybrid: + AE decoder", config={"recon_weight": 1.0})]
    if "semi" in groups:
        semi = {"score": "norm", "entropy_on": "backbone", "beta": 1.0}
        runs.append(Run("semi", "semi: 0 labelled (same config, norm score)", config=semi))
        runs += [Run("semi", f"semi: {n} labelled per class", config=semi,
                     labelled={"cdm": n, "vortex": n}) for n in (10, 50, 250)]
        runs.append(Run("semi", "semi: 50 cdm only (unseen vortex)", config=semi,
                        labelled={"cdm": 50}))
    return runs


def preset_for(name: str):
    """A preset by name; ``model-a64`` is Model A at 64x64 over the same field of view."""
    from darklens.simulate.presets import get_preset

    if name == "model-a64":
        return get_preset("model-a", {"n_pix": "64", "pixel_scale": str(0.05 * 150 / 64)})
    return get_preset(name)


def preset_key(preset: str) -> str:
    """Short hash of every field of a preset, so a re-tuned preset never reuses stale images."""
    text = json.dumps(preset_for(preset).to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def simulate(preset: str, n_per_class: int, seed: int, classes: tuple[str, ...],
             cache: Path) -> LensData:
    """Simulated images, cached as a plain .npz (no pickle) keyed by everything that matters."""
    from darklens.simulate.simulator import simulate_dataset

    path = cache / f"{preset}-{preset_key(preset)}-{'+'.join(classes)}-n{n_per_class}-s{seed}.npz"
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
    cfg = {**type(det).train_defaults, **({"epochs": epochs} if epochs > 0 else {}),
           "seed": seed, "progress": False, **run.train}
    if run.detector == "infotheoretic" and data.get("pseudo") is not None:
        det.set_pseudo_anomalies(data["pseudo"])
    if run.labelled:
        parts = [data["labelled"][c][:n] for c, n in run.labelled.items()]
        det.set_labelled_anomalies(torch.as_tensor(np.concatenate(parts)))
    test_x = torch.as_tensor(data["test"].images)
    curve: list[dict[str, float]] = []
    evaluating = [0.0]  # seconds spent on the learning curve, not counted as training time

    def on_epoch_end(epoch: int, row: dict[str, float]) -> None:
        if not curves:
            return
        t = time.perf_counter()
        was_training = det.training
        det.fit_end(data["train_images"].split(256), data["val_images"].split(256))
        s = det.score_all(test_x)
        det.train(was_training)
        diag = det.diagnostics()  # the label-free criteria after this epoch, beside the truth
        curve.append({"epoch": epoch, "train_seconds": t - t0 - evaluating[0],
                      **{f"auroc_{k}": anomaly_metrics(v.numpy(), data["test"].labels)[
                          "auroc"]["all"] for k, v in s.items()},
                      "selected": diag["selected_score"],
                      **{f"pseudo_{k}": v for k, v in diag["pseudo_auroc"].items()}})
        evaluating[0] += time.perf_counter() - t

    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CollapseWarning)
        train_set, val_set = data["train"], data["val"]
        if run.views > 1:
            views = data["views"]
            train_set, val_set = (views["flat"], data["val"]) if run.flatten_views else \
                (views["train"], views["val"])
        result = fit(det, train_set, val_set, TrainConfig.from_dict(cfg),
                     on_epoch_end=on_epoch_end)
    seconds = time.perf_counter() - t0 - evaluating[0]
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
        "config": run.config, "train": cfg, "labelled": run.labelled, "views": run.views,
        "flatten_views": run.flatten_views,
        "seconds": seconds, "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
        "terms": {k: v for k, v in (result.history[-1] if result.history else {}).items()
                  if k in TERM_COLUMNS},
        "term_history": [{k: row[k] for k in ("epoch", *TERM_COLUMNS, "val_loss",
                                              "selection_loss") if k in row}
                         for row in result.history],
        "scores": _auroc_table(scores, labels), "default_score": default,
        "diagnostics": diag,
        "warnings": [str(w.message) for w in caught if issubclass(w.category, CollapseWarning)],
        "curve": curve,
    }


def load_data(preset: str, n_train: int, n_test: int, n_labelled: int, cache: Path,
              seed: int = 0, views: int = 1, pseudo: str = "physical",
              pseudo_copies: int = 1) -> dict[str, Any]:
    train = simulate(preset, n_train, 1000 + seed, ("no_sub",), cache)
    test = simulate(preset, n_test, 2000 + seed, CLASSES, cache)
    x = torch.as_tensor(train.images)
    n_val = max(2, n_train // 10)
    out: dict[str, Any] = {
        "train": TensorDataset(x[n_val:]), "val": TensorDataset(x[:n_val]),
        "train_images": x[n_val:], "val_images": x[:n_val], "test": test,
        "pseudo": None,
    }
    if pseudo == "physical":  # the validation normals with random point-mass perturbers
        from darklens.simulate.pseudo import perturbed_normals

        # ``pseudo_copies`` perturbed versions of each (different perturbers, same noise)
        out["pseudo"] = perturbed_normals(preset_for(preset),
                                          np.tile(np.arange(n_val), pseudo_copies),
                                          1000 + seed, pseudo_seed=7 + seed)
    if views > 1:
        # The same training lenses rendered ``views`` times (view 0 is the image above).
        stack = native_views(preset, n_train, 1000 + seed, views, cache)
        if not torch.equal(stack[:, :1], x):
            raise RuntimeError("native view 0 differs from the simulated training image")
        out["views"] = {"train": TensorDataset(stack[n_val:]), "val": TensorDataset(stack[:n_val]),
                        "flat": TensorDataset(stack[n_val:].reshape(-1, 1, *x.shape[-2:]))}
    if n_labelled:
        lab = simulate(preset, n_labelled, 3000 + seed, ("cdm", "vortex"), cache)
        out["labelled"] = {c: lab.images[lab.labels == CLASSES.index(c)] for c in ("cdm", "vortex")}
    return out


def native_views(preset: str, n: int, seed: int, views: int, cache: Path) -> torch.Tensor:
    """(n, views, H, W) simulator-native renderings of the no_sub images 0..n-1, cached."""
    from darklens.simulate.views import render_views

    path = cache / f"{preset}-{preset_key(preset)}-no_sub-views{views}-n{n}-s{seed}.npy"
    if path.exists():
        return torch.as_tensor(np.load(path, allow_pickle=False))
    stack = render_views(preset_for(preset), "no_sub", np.arange(n), seed, views)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, stack.numpy())
    tmp.replace(path)
    return stack


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
        for score in ("norm", "neg_norm", "knn", "critic", "patch_knn"):
            vals = [pick(r, score, "all") for r in runs if score in r["scores"]]
            out[f"{score}_all"] = [v for v in vals if v is not None]
        out["selected"] = sorted({r["default_score"] for r in runs})
        out["pseudo_auroc"] = [r["diagnostics"].get("pseudo_auroc", {}).get(r["default_score"])
                               for r in runs if r["diagnostics"]]
        out["collapsed"] = sum(bool(r["diagnostics"].get("collapsed")) for r in runs)
        out["seconds"] = float(np.mean([r["seconds"] for r in runs]))
        for col in ("infonce_bound", "entropy_bound"):
            vals = [r.get("terms", {}).get(col) for r in runs]
            out[col] = [float(v) for v in vals if v is not None]
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


def beta_curves(table: list[dict[str, Any]]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Per preset and critic form, the ``tradeoff`` rows in beta order: both bounds, AUROCs."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for t in table:
        if t["group"] != "tradeoff" or not t["entropy_bound"]:
            continue
        form, beta = t["label"].rsplit(", beta=", 1)
        out.setdefault(t["preset"], {}).setdefault(form, []).append({
            "beta": float(beta), "label": f"beta={beta}",
            "entropy_bound": float(np.mean(t["entropy_bound"])),
            "infonce_bound": float(np.mean(t["infonce_bound"])),
            "auroc": float(np.mean(t["auroc_all"])) if t["auroc_all"] else None,
            "norm_all": float(np.mean(t["norm_all"])) if t["norm_all"] else None,
            "knn_all": float(np.mean(t["knn_all"])) if t["knn_all"] else None,
            "selected": t["selected"]})
    for forms in out.values():
        for pts in forms.values():
            pts.sort(key=lambda p: p["beta"])
    return out


def print_beta_curves(curves: dict[str, dict[str, list[dict[str, Any]]]]) -> None:
    """The beta curve as a table: entropy and InfoNCE bounds, R(z) and kNN AUROC per beta."""
    for preset, forms in curves.items():
        for form, pts in forms.items():
            print(f"\nbeta curve on {preset}, {form}")
            print(f"{'beta':>6} {'entropy R(z)':>12} {'InfoNCE nats':>12} {'AUROC':>6} "
                  f"{'R(z)':>6} {'knn':>6}  selected")
            for q in pts:
                print(f"{q['beta']:>6g} {q['entropy_bound']:>12.4g} {q['infonce_bound']:>12.3f} "
                      f"{_opt(q['auroc'])} {_opt(q['norm_all'])} {_opt(q['knn_all'])}  "
                      f"{','.join(q['selected'])}")
            ent = [q["entropy_bound"] for q in pts]
            if len(ent) > 1 and min(ent) > 0:
                monotone = all(b <= a for a, b in zip(ent, ent[1:], strict=False))
                print(f"entropy bound moves {max(ent) / min(ent):.1f}x over the curve; "
                      f"{'monotone' if monotone else 'not monotone'} in beta")


def _commit() -> str | None:
    """The repository's HEAD commit (short), or None outside a git checkout."""
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10, cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _opt(v: float | None) -> str:
    return f"{v:>6.3f}" if v is not None else f"{'-':>6}"


def write_information_plane(curves: dict[str, dict[str, list[dict[str, Any]]]],
                            out_json: Path) -> list[str]:
    """One information-plane PNG per preset next to the JSON; returns the paths written."""
    from darklens.report.figures import information_plane_figure

    paths = []
    for preset, forms in curves.items():
        fig = information_plane_figure(forms)
        fig.axes[0].set_title(f"information plane, {preset} (test AUROC of the chosen score)",
                              fontsize=9)
        stem = out_json.stem if preset in out_json.stem else f"{out_json.stem}-{preset}"
        path = out_json.with_name(f"{stem}-information-plane.png")
        fig.savefig(path, dpi=90)
        paths.append(str(path))
    return paths


def selection_correlation(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per preset: does a pseudo-AUROC rank configurations and scores like the test AUROC?

    Over every unsupervised infotheoretic run (not baselines, not semi-supervised) and every
    score it has: the Spearman correlation of the test AUROC (all anomalies) with the
    physical pseudo-AUROC (perturbed validation normals) and with the patch-swap AUROC; and,
    per run (one point per configuration, the chosen score), of the test AUROC with the
    physical pseudo-AUROC (``chosen``) and with the patch-swap AUROC (``chosen_patch_swap``):
    the question a sweep over configurations asks.
    """
    out: dict[str, dict[str, Any]] = {}
    for preset in sorted({r["preset"] for r in records if "scores" in r}):
        pairs: dict[str, list[tuple[float, float]]] = {
            "physical": [], "patch_swap": [], "chosen": [], "chosen_patch_swap": []}
        for r in records:
            if ("scores" not in r or r["preset"] != preset or r["detector"] != "infotheoretic"
                    or r["group"] in ("semi", "baselines", "long") or not r["diagnostics"]):
                continue
            d = r["diagnostics"]
            for name, sc in r["scores"].items():
                if sc is None:
                    continue
                test = sc["auroc"]["all"]
                if d.get("pseudo_kind") == "physical":
                    pairs["physical"].append((d["pseudo_auroc"][name], test))
                if name in d.get("patch_swap_auroc", {}):
                    pairs["patch_swap"].append((d["patch_swap_auroc"][name], test))
            chosen = r["scores"].get(r["default_score"])
            if chosen is not None:
                pairs["chosen"].append((d["pseudo_auroc"][r["default_score"]],
                                        chosen["auroc"]["all"]))
                if r["default_score"] in d.get("patch_swap_auroc", {}):
                    pairs["chosen_patch_swap"].append(
                        (d["patch_swap_auroc"][r["default_score"]], chosen["auroc"]["all"]))
        out[preset] = {k: {"n": len(v), "spearman": _spearman(v)} for k, v in pairs.items()}
    return out


def _spearman(pairs: list[tuple[float, float]]) -> float | None:
    from scipy.stats import spearmanr

    pairs = [(a, b) for a, b in pairs if math.isfinite(a) and math.isfinite(b)]
    if len(pairs) < 3:
        return None
    rho = spearmanr([a for a, _ in pairs], [b for _, b in pairs]).statistic
    return None if not math.isfinite(rho) else float(rho)


def label_free_pick(table: list[dict[str, Any]]) -> dict[str, Any]:
    """Per preset, the unsupervised infotheoretic configuration with the best pseudo-AUROC."""
    picks = {}
    for preset in sorted({t["preset"] for t in table}):
        cands = [t for t in table if t["preset"] == preset
                 and t["group"] not in ("baselines", "long", "semi") and t["pseudo_auroc"]
                 and all(p is not None for p in t["pseudo_auroc"])]
        if cands:
            best = max(cands, key=lambda t: float(np.mean(t["pseudo_auroc"])))
            picks[preset] = {"label": best["label"],
                             "pseudo_auroc": float(np.mean(best["pseudo_auroc"])),
                             "test_auroc_all": float(np.mean(best["auroc_all"]))}
    return picks


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", action="append",
                   choices=("demo", "model-a64", "model-ii", "model-iii"),
                   help="repeatable; default: demo and model-a64")
    p.add_argument("--groups", default=",".join(GROUPS),
                   help=f"comma-separated subset of {','.join(GROUPS)}")
    p.add_argument("--n-train", type=int, default=1000, help="no_sub training images")
    p.add_argument("--n-test", type=int, default=500, help="test images per class")
    p.add_argument("--epochs", type=int, default=20,
                   help="epochs of every run (0: each detector's own default)")
    p.add_argument("--seeds", type=int, default=3,
                   help="training seeds of the default, native-view and baseline runs")
    p.add_argument("--ablation-seeds", type=int, default=1,
                   help="training seeds of the ablation groups (they are many)")
    p.add_argument("--views", type=int, default=4,
                   help="simulator-native renderings per training lens for the native-view "
                   "rows (1: none)")
    p.add_argument("--budget-minutes", type=float, default=60.0,
                   help="stop starting new runs after this much wall time")
    p.add_argument("--curves", action="store_true",
                   help="learning curve (test AUROC per epoch) for the default config, seed 0")
    p.add_argument("--smoke", action="store_true", help="tiny run (about a minute)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--baselines", default=None,
                   help="comma-separated detectors of the baselines group (default: all)")
    p.add_argument("--pseudo-copies", type=int, default=1,
                   help="physical pseudo-anomalies per validation normal (each with its own "
                   "perturbers; more copies, less sampling noise in the pseudo-AUROC)")
    p.add_argument("--only", action="append",
                   help="repeatable: run only the configuration with this label")
    p.add_argument("--pseudo", choices=("physical", "patch-swap"), default="physical",
                   help="pseudo-anomalies of the label-free choice: the validation normals "
                   "re-rendered with random point masses (darklens.simulate.pseudo), or "
                   "local patch swaps of them (the earlier proxy); both AUROCs are recorded")
    p.add_argument("--cache", default="runs/bench-cache")
    p.add_argument("--out", default="benchmarks/results/infotheoretic.json")
    p.add_argument("--resume", action="store_true",
                   help="keep the finished runs of an earlier (interrupted) --out and add the rest")
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
                Run("default", "infotheoretic (native views x2)", config=NATIVE, views=2),
                Run("critic", "critic=bilinear raw",
                    config={"critic": "bilinear", "normalise": False}),
                Run("semi", "semi: 10 labelled per class", config={"score": "norm"},
                    labelled={"cdm": 10, "vortex": 10}),
                Run("baselines", "deep-svdd", detector="deep-svdd"),
                Run("baselines", "knn", detector="knn")]
    else:
        runs = ablation_runs(groups, args.views, tuple(args.baselines.split(","))
                             if args.baselines else None)
        if args.only:
            runs = [r for r in runs if r.label in args.only]
    n_labelled = max([max(r.labelled.values()) for r in runs if r.labelled] or [0])
    start = time.perf_counter()
    budget = args.budget_minutes * 60
    records: list[dict[str, Any]] = []
    cache = Path(args.cache)
    datasets = {}
    for preset in presets:
        t = time.perf_counter()
        datasets[preset] = load_data(preset, args.n_train, args.n_test, n_labelled, cache,
                                     views=max([r.views for r in runs] + [1]),
                                     pseudo=args.pseudo, pseudo_copies=args.pseudo_copies)
        print(f"[{preset}] data ready in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    main_groups = ("default", "baselines")
    # Main comparison for every seed first, then the ablations: a budget cut leaves complete
    # comparisons.
    schedule = [(seed, preset, run) for seed in range(args.seeds) for preset in presets
                for run in runs if run.group in main_groups]
    schedule += [(seed, preset, run) for seed in range(args.ablation_seeds) for preset in presets
                 for run in runs if run.group not in main_groups]
    done: dict[tuple[str, str, int], dict[str, Any]] = {}
    out_path = Path(args.out)
    if args.resume and out_path.exists():
        for r in json.loads(out_path.read_text())["records"]:
            if "scores" in r:
                done[(r["preset"], r["label"], r["seed"])] = r
        print(f"resuming: {len(done)} finished runs read from {out_path}", file=sys.stderr)

    def write(final: bool) -> dict[str, Any]:
        # Finished runs read back but not reached yet stay in the file (a second interruption
        # must not lose them).
        listed = {(r["preset"], r["label"], r["seed"]) for r in records}
        pending = [r for key, r in done.items() if key not in listed]
        table = summarise(records + pending)
        payload = {
            "command": " ".join(["python", "benchmarks/infotheoretic.py",
                                 *(argv if argv is not None else sys.argv[1:])]),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": platform.platform(),
            "cpus": os.cpu_count(), "commit": _commit(), "args": vars(args),
            "torch_threads": torch.get_num_threads(),
            "complete": final, "wall_seconds": time.perf_counter() - start, "table": table,
            "label_free_pick": label_free_pick(table), "beta_curves": beta_curves(table),
            "selection_correlation": selection_correlation(records + pending),
            "records": records + pending,
        }
        write_json_atomic(args.out, payload)
        return payload

    for seed, preset, run in schedule:
        meta = {"preset": preset, "group": run.group, "label": run.label, "seed": seed}
        if (preset, run.label, seed) in done:
            records.append(done[(preset, run.label, seed)])
            continue
        if time.perf_counter() - start > budget:
            records.append({**meta, "skipped": "budget"})
            continue
        rec = execute(run, seed, datasets[preset], args.epochs,
                      curves=args.curves and seed == 0 and run.group == "default")
        rec["preset"] = preset
        records.append(rec)
        write(final=False)
        d = rec["scores"].get(rec["default_score"]) or {}
        auroc = d.get("auroc", {})
        print(f"[{preset} seed {seed}] {run.label}: {rec['default_score']} AUROC "
              f"all {auroc.get('all', math.nan):.3f} cdm {auroc.get('cdm', math.nan):.3f}"
              f" vortex {auroc.get('vortex', math.nan):.3f} ({rec['seconds']:.0f} s)",
              file=sys.stderr)
    payload = write(final=True)
    print_table(payload["table"])
    curves = beta_curves(payload["table"])
    if curves:
        print_beta_curves(curves)
        for path in write_information_plane(curves, out_path):
            print(f"wrote {path}")
    for preset, corr in payload["selection_correlation"].items():
        print(f"pseudo-AUROC vs test AUROC on {preset} (Spearman, every run and score): "
              + ", ".join(f"{k} {_opt(v['spearman']).strip()} (n={v['n']})"
                          for k, v in corr.items()))
    for preset, pick in payload["label_free_pick"].items():
        print(f"label-free pick on {preset}: {pick['label']} (pseudo-AUROC "
              f"{pick['pseudo_auroc']:.3f}) -> test AUROC {pick['test_auroc_all']:.3f}")
    skipped = [r for r in records if r.get("skipped")]
    if skipped:
        print(f"{len(skipped)} runs skipped for the time budget")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
