"""Cross-simulator check: darklens detectors on lenstronomy-made images they did not make.

darklens's own benchmarks train and test on darklens's simulator, so a detector could learn that
simulator's quirks. This benchmark renders an independent set with lenstronomy (SIE + shear
macro lens, an elliptical Sersic source, Gaussian PSF, Poisson + background noise; point-mass
subhalos for ``cdm``, a chain of point masses standing in for a line mass for ``vortex``), writes
it in DeepLense's class-folder layout as min-max normalised float32 ``.npy`` files, and runs the
detectors exactly as a new user with their own folders would: ``darklens train --data`` on the
normal training images, then ``darklens evaluate`` on the labelled test folders.

Two steps::

    python benchmarks/cross_simulator.py make --out runs/xsim --n-train 1000 --n-test 300 \
        --seed 0 --workers 2
    python benchmarks/cross_simulator.py run --data runs/xsim --detectors knn,dcae,infotheoretic \
        --epochs 10 --out benchmarks/results/cross_simulator.json

``make`` writes ``DIR/train/no_sub/*.npy`` (normal images only: detectors train on normals),
``DIR/test/{no_sub,cdm,vortex}/*.npy``, ``DIR/truth.csv`` (every drawn parameter, the S/N and
the substructure's chi^2 per image) and ``DIR/manifest.json``. Image ``(seed, split, class,
index)`` is drawn from ``np.random.default_rng([seed, split_id, class_id, index])`` alone
(parameters first, then the noise), so any image can be reproduced on its own and a rerun skips
the images already written (files are written under hidden temp names, then renamed).

``run`` calls ``darklens train`` and ``darklens evaluate`` as subprocesses for every detector
(``--extra NAME='ARGS'`` passes more arguments to one detector's ``darklens train``), times
them, collects ``RUN/metrics.json`` into ``--out`` (rewritten after every detector; ``--resume``
keeps the detectors already there) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import multiprocessing
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from _record import parse_extra  # benchmarks/_record.py, beside this script

N_PIX = 64
PIXEL_SCALE = 0.08  # arcsec per pixel
SUPERSAMPLING = 2
EXPOSURE_TIME = 1000.0  # s: Poisson noise on image counts
BACKGROUND_RMS = 0.02  # counts/s per pixel: Gaussian background noise
N_VORTEX_POINTS = 30
CLASSES = ("no_sub", "cdm", "vortex")  # the position is the class id of the seed
SPLITS = ("train", "test")  # the position is the split id of the seed
# Sersic amplitude at R_sersic, counts/s per arcsec^2. Chosen so that the S/N (sqrt of the sum
# over pixels of (noiseless / sigma)^2) lands roughly in 30-150: with U[4, 8] its 10/50/90
# percentiles were 44/74/133 (150 test no_sub images, seed 0); U[20, 40] gave 185/279/430.
AMP_RANGE = (4.0, 8.0)
# Brightness regimes: (Sersic amplitude range, exposure time in s). "faint" is the set above;
# "bright" gives the whole-image S/N of DeepLense-like data (model-a64: 10/50/90 percentiles
# of about 1200/1400/1750), with the same lenses, subhalos, PSF and background noise.
REGIMES = {"faint": (AMP_RANGE, EXPOSURE_TIME), "bright": ((60.0, 120.0), 60000.0)}


def priors(regime: str = "faint") -> dict[str, str]:
    """The priors of a brightness regime, as recorded in the manifest."""
    (lo, hi), exposure = REGIMES[regime]
    out = dict(PRIORS)
    out["source"] = out["source"].replace(f"U[{AMP_RANGE[0]:g}, {AMP_RANGE[1]:g}]",
                                          f"U[{lo:g}, {hi:g}]")
    out["noise"] = out["noise"].replace(f"exposure time {EXPOSURE_TIME:g} s",
                                        f"exposure time {exposure:g} s")
    return out


PRIORS = {
    "macro_lens": "SIE theta_E ~ U[0.9, 1.4] arcsec, e1, e2 ~ U[-0.2, 0.2], centre x, y ~ "
                  "U[-0.05, 0.05] arcsec; SHEAR gamma1, gamma2 ~ U[-0.06, 0.06]",
    "source": "SERSIC_ELLIPSE R_sersic ~ U[0.12, 0.3] arcsec, n_sersic ~ U[0.8, 2.5], e1, e2 ~ "
              "U[-0.25, 0.25], centre x, y ~ U[-0.25, 0.25] arcsec, amp ~ "
              f"U[{AMP_RANGE[0]:g}, {AMP_RANGE[1]:g}] counts/s/arcsec^2 at R_sersic",
    "lens_light": "none",
    "psf": "GAUSSIAN, FWHM ~ U[0.08, 0.16] arcsec per image",
    "noise": f"Poisson on counts with exposure time {EXPOSURE_TIME:g} s, plus Gaussian "
             f"background of rms {BACKGROUND_RMS:g} counts/s per pixel",
    "cdm": "N = max(1, Poisson(8)) POINT_MASS, theta_E log-uniform in [0.02, 0.10] arcsec, at "
           "radius U[0.6, 1.6] x theta_E(macro) from the lens centre, uniform angle",
    "vortex": f"{N_VORTEX_POINTS} POINT_MASS evenly spaced (end points included) along a segment "
              "of length U[0.6, 1.5] arcsec, uniform orientation, midpoint at radius U[0, 0.8] "
              "arcsec from the lens centre at a uniform angle; each theta_E = theta_vortex / "
              f"sqrt({N_VORTEX_POINTS}), theta_vortex ~ U[0.12, 0.2] arcsec",
    "no_sub": "the macro lens only",
    "grid": f"{N_PIX}x{N_PIX} pixels of {PIXEL_SCALE:g} arcsec centred on the origin, "
            f"supersampling factor {SUPERSAMPLING}, float64 rendering",
    "output": "each noisy image min-max normalised to [0, 1], saved as float32 .npy",
}

SUB_KEYS = ("sub_theta_E", "sub_x", "sub_y")  # per point mass: lists in truth.csv (';'-joined)


# ----------------------------------------------------------------------------- drawing


def image_rng(seed: int, split: str, cls: str, index: int) -> np.random.Generator:
    """The one generator every draw of image (seed, split, class, index) comes from."""
    return np.random.default_rng([seed, SPLITS.index(split), CLASSES.index(cls), index])


def draw_params(rng: np.random.Generator, cls: str,
                amp_range: tuple[float, float] = AMP_RANGE) -> dict[str, Any]:
    """Every parameter of one lens system (floats, and arrays of the point masses)."""
    p: dict[str, Any] = {}
    p["theta_E"] = rng.uniform(0.9, 1.4)
    p["lens_e1"], p["lens_e2"] = rng.uniform(-0.2, 0.2, 2)
    p["lens_x"], p["lens_y"] = rng.uniform(-0.05, 0.05, 2)
    p["gamma1"], p["gamma2"] = rng.uniform(-0.06, 0.06, 2)
    p["R_sersic"] = rng.uniform(0.12, 0.3)
    p["n_sersic"] = rng.uniform(0.8, 2.5)
    p["src_e1"], p["src_e2"] = rng.uniform(-0.25, 0.25, 2)
    p["src_x"], p["src_y"] = rng.uniform(-0.25, 0.25, 2)
    p["amp"] = rng.uniform(*amp_range)
    p["psf_fwhm"] = rng.uniform(0.08, 0.16)
    theta = x = y = np.zeros(0)
    if cls == "cdm":
        n = max(1, int(rng.poisson(8)))
        theta = np.exp(rng.uniform(math.log(0.02), math.log(0.10), n))
        radius = rng.uniform(0.6, 1.6, n) * p["theta_E"]
        angle = rng.uniform(0, 2 * math.pi, n)
        x = p["lens_x"] + radius * np.cos(angle)
        y = p["lens_y"] + radius * np.sin(angle)
    elif cls == "vortex":
        p["vortex_length"] = rng.uniform(0.6, 1.5)
        p["vortex_orientation"] = rng.uniform(0, math.pi)
        p["vortex_radius"] = rng.uniform(0, 0.8)
        p["vortex_angle"] = rng.uniform(0, 2 * math.pi)
        p["theta_vortex"] = rng.uniform(0.12, 0.2)
        mid_x = p["lens_x"] + p["vortex_radius"] * math.cos(p["vortex_angle"])
        mid_y = p["lens_y"] + p["vortex_radius"] * math.sin(p["vortex_angle"])
        t = np.linspace(-0.5, 0.5, N_VORTEX_POINTS) * p["vortex_length"]
        x = mid_x + t * math.cos(p["vortex_orientation"])
        y = mid_y + t * math.sin(p["vortex_orientation"])
        theta = np.full(N_VORTEX_POINTS, p["theta_vortex"] / math.sqrt(N_VORTEX_POINTS))
    elif cls != "no_sub":
        raise ValueError(f"unknown class {cls!r}")
    p["sub_theta_E"], p["sub_x"], p["sub_y"] = theta, x, y
    return p


# ----------------------------------------------------------------------------- rendering


@lru_cache(maxsize=1)
def _image_data():
    from lenstronomy.Data.imaging_data import ImageData

    half = (N_PIX - 1) / 2 * PIXEL_SCALE
    return ImageData(image_data=np.zeros((N_PIX, N_PIX)), ra_at_xy_0=-half, dec_at_xy_0=-half,
                     transform_pix2angle=np.diag([PIXEL_SCALE, PIXEL_SCALE]))


@lru_cache(maxsize=64)
def _lens_model(n_sub: int):
    from lenstronomy.LensModel.lens_model import LensModel

    return LensModel(["SIE", "SHEAR"] + ["POINT_MASS"] * n_sub)


@lru_cache(maxsize=1)
def _source_model():
    from lenstronomy.LightModel.light_model import LightModel

    return LightModel(["SERSIC_ELLIPSE"])


def lens_kwargs(params: dict[str, Any], substructure: bool = True) -> list[dict[str, float]]:
    """lenstronomy kwargs of the lens list SIE, SHEAR, POINT_MASS x n (n = 0 without subs)."""
    kwargs = [
        {"theta_E": params["theta_E"], "e1": params["lens_e1"], "e2": params["lens_e2"],
         "center_x": params["lens_x"], "center_y": params["lens_y"]},
        {"gamma1": params["gamma1"], "gamma2": params["gamma2"], "ra_0": 0.0, "dec_0": 0.0},
    ]
    if substructure:
        kwargs += [{"theta_E": float(t), "center_x": float(x), "center_y": float(y)}
                   for t, x, y in zip(*(params[k] for k in SUB_KEYS), strict=True)]
    return kwargs


def render(params: dict[str, Any], noise: bool = False, rng: np.random.Generator | None = None,
           substructure: bool = True) -> np.ndarray:
    """The (N_PIX, N_PIX) float64 image in counts/s per pixel; noisy if ``noise`` (needs rng).

    ``substructure=False`` leaves the point masses out (the same lens without its subhalos).
    """
    from lenstronomy.Data.psf import PSF
    from lenstronomy.ImSim.image_model import ImageModel

    kwargs_lens = lens_kwargs(params, substructure)
    model = ImageModel(
        _image_data(),
        PSF(psf_type="GAUSSIAN", fwhm=params["psf_fwhm"]),
        lens_model_class=_lens_model(len(kwargs_lens) - 2),
        source_model_class=_source_model(),
        kwargs_numerics={"supersampling_factor": SUPERSAMPLING},
    )
    kwargs_source = [{"amp": params["amp"], "R_sersic": params["R_sersic"],
                      "n_sersic": params["n_sersic"], "e1": params["src_e1"],
                      "e2": params["src_e2"], "center_x": params["src_x"],
                      "center_y": params["src_y"]}]
    image = np.asarray(model.image(kwargs_lens, kwargs_source), dtype=np.float64)
    if noise:
        if rng is None:
            raise ValueError("noise=True needs rng")
        image = image + noise_draw(image, rng)
    return image


def noise_variance(clean: np.ndarray, exposure: float = EXPOSURE_TIME) -> np.ndarray:
    """Per-pixel variance of the noise on a noiseless image (Poisson + background)."""
    return np.clip(clean, 0, None) / exposure + BACKGROUND_RMS**2


def noise_draw(clean: np.ndarray, rng: np.random.Generator,
               exposure: float = EXPOSURE_TIME) -> np.ndarray:
    """One noise realisation: Poisson counts over the exposure plus Gaussian background."""
    mean = np.clip(clean, 0, None)
    counts = rng.poisson(mean * exposure) / exposure
    return counts - clean + rng.normal(0.0, BACKGROUND_RMS, clean.shape)


def minmax(image: np.ndarray) -> np.ndarray:
    """Min-max normalised to [0, 1] as float32 (as DeepLense's public data are)."""
    lo, hi = float(image.min()), float(image.max())
    out = (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def make_image(seed: int, split: str, cls: str, index: int,
               regime: str = "faint") -> tuple[np.ndarray, dict[str, Any]]:
    """One image (normalised float32) and its truth row: parameters, snr, substructure_chi2."""
    amp_range, exposure = REGIMES[regime]
    rng = image_rng(seed, split, cls, index)
    params = draw_params(rng, cls, amp_range)
    clean = render(params)
    variance = noise_variance(clean, exposure)
    snr = float(np.sqrt(np.sum(clean**2 / variance)))
    chi2 = 0.0
    if len(params["sub_theta_E"]):
        smooth = render(params, substructure=False)
        chi2 = float(np.sum((clean - smooth) ** 2 / variance))
    image = minmax(clean + noise_draw(clean, rng, exposure))
    row: dict[str, Any] = {"split": split, "class": cls, "index": index,
                           "file": f"{split}/{cls}/{name(cls, index)}"}
    for key, value in params.items():
        if key in SUB_KEYS:
            row[key] = ";".join(repr(float(v)) for v in value)
        else:
            row[key] = float(value)
    row["n_sub"] = len(params["sub_theta_E"])
    row["snr"], row["substructure_chi2"] = snr, chi2
    return image, row


# ----------------------------------------------------------------------------- writing


def name(cls: str, index: int) -> str:
    """File name of image ``index`` of a class."""
    return f"{cls}_{index:06d}.npy"


def _write_atomic(path: Path, write) -> None:
    """Call ``write(file)`` on a hidden temp file beside ``path``, then rename it onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_text(path: Path, text: str) -> None:
    _write_atomic(path, lambda fh: fh.write(text.encode()))


def _row_path(out: Path, split: str, cls: str, index: int) -> Path:
    # Hidden folder beside train/ and test/: the per-image truth rows a rerun reuses.
    return out / ".truth" / split / cls / f"{cls}_{index:06d}.json"


def _make_one(task: tuple[str, int, str, str, int, str]) -> dict[str, Any]:
    out, seed, split, cls, index, regime = task
    image, row = make_image(seed, split, cls, index, regime)
    root = Path(out)
    _write_text(_row_path(root, split, cls, index), json.dumps(row))
    _write_atomic(root / split / cls / name(cls, index),
                  lambda fh: np.save(fh, image, allow_pickle=False))
    return row


def plan(n_train: int, n_test: int) -> list[tuple[str, str, int]]:
    """Every (split, class, index) of the set: normals only in train."""
    tasks = [("train", "no_sub", i) for i in range(n_train)]
    tasks += [("test", c, i) for c in CLASSES for i in range(n_test)]
    return tasks


def make(out: Path, n_train: int, n_test: int, seed: int, workers: int = 2,
         log=print, regime: str = "faint") -> list[dict[str, Any]]:
    """Write the data set (resuming a partial one); return the truth rows in file order."""
    import lenstronomy
    from lenstronomy.Data.psf import PSF  # noqa: F401  (imported once here, before the fork)
    from lenstronomy.ImSim.image_model import ImageModel  # noqa: F401

    _image_data(), _source_model(), _lens_model(0)
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifest.json"
    old: dict[str, Any] = {}
    if manifest_path.exists():
        old = json.loads(manifest_path.read_text())
        if old.get("seed") != seed or old.get("priors") != priors(regime):
            raise SystemExit(f"{out} holds a set made with seed {old.get('seed')} (or other "
                             "priors); use another --out")
    manifest: dict[str, Any] = {
        "seed": seed, "counts": {"train": {"no_sub": n_train},
                                 "test": {c: n_test for c in CLASSES}},
        "lenstronomy": lenstronomy.__version__, "numpy": np.__version__,
        "seeding": "np.random.default_rng([seed, split_id, class_id, index]); split_id: "
                   f"{dict(enumerate(SPLITS))}, class_id: {dict(enumerate(CLASSES))}",
        "regime": regime, "priors": priors(regime),
        "date": old.get("date", time.strftime("%Y-%m-%d %H:%M:%S %Z")),
        "complete": False, "render_runs": old.get("render_runs", []),
    }
    _write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")
    rows: dict[tuple[str, str, int], dict[str, Any]] = {}
    todo = []
    for split, cls, index in plan(n_train, n_test):
        row_path = _row_path(out, split, cls, index)
        if (out / split / cls / name(cls, index)).exists() and row_path.exists():
            rows[(split, cls, index)] = json.loads(row_path.read_text())
        else:
            todo.append((str(out), seed, split, cls, index, regime))
    log(f"{len(rows)} images already present, {len(todo)} to render with {workers} worker(s)")
    start = time.perf_counter()
    if todo:
        if workers > 1:
            with multiprocessing.Pool(workers) as pool:
                done = pool.imap_unordered(_make_one, todo, chunksize=4)
                _collect(done, rows, len(todo), start, log)
        else:
            _collect(map(_make_one, todo), rows, len(todo), start, log)
    seconds = time.perf_counter() - start
    if todo:
        log(f"rendered {len(todo)} images in {seconds:.1f} s: {len(todo) / seconds:.1f} images/s "
            f"({workers} worker(s))")
    ordered = [rows[key] for key in plan(n_train, n_test)]
    planned = {row["file"] for row in ordered}
    stray = [p for p in sorted(out.glob("*/*/*.npy")) if not p.name.startswith(".")
             and str(p.relative_to(out)) not in planned]
    if stray:
        log(f"warning: {len(stray)} image(s) in {out} beyond --n-train/--n-test (e.g. "
            f"{stray[0].relative_to(out)}) are not in truth.csv; darklens will read them too")
    write_truth(out / "truth.csv", ordered)
    manifest["render_runs"].append({"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                                    "rendered": len(todo), "seconds": seconds,
                                    "workers": workers})
    manifest.update(complete=True, summary=summary(ordered))
    _write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")
    return ordered


def _collect(results: Iterable[dict[str, Any]], rows: dict, total: int, start: float,
             log) -> None:
    step = max(1, total // 10)
    for k, row in enumerate(results, start=1):
        rows[(row["split"], row["class"], row["index"])] = row
        if k % step == 0 and k < total:
            elapsed = time.perf_counter() - start
            log(f"  {k}/{total} images, {k / elapsed:.1f} images/s")


def write_truth(path: Path, rows: list[dict[str, Any]]) -> None:
    """``truth.csv``: one row per image, the union of columns (empty where not drawn)."""
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    _write_text(path, buf.getvalue())


def summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, list[float]]]:
    """10/50/90 percentiles of S/N per (split, class) and of substructure_chi2 per anomaly class."""
    out: dict[str, dict[str, list[float]]] = {"snr": {}, "substructure_chi2": {}}
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(f"{row['split']}/{row['class']}", []).append(row)
    for key, group in groups.items():
        snr = [r["snr"] for r in group]
        out["snr"][key] = [float(v) for v in np.percentile(snr, [10, 50, 90])]
        if not key.endswith("no_sub"):
            chi2 = [r["substructure_chi2"] for r in group]
            out["substructure_chi2"][key] = [float(v) for v in np.percentile(chi2, [10, 50, 90])]
    return out


def print_summary(stats: dict[str, dict[str, list[float]]]) -> None:
    print("| quantity | split/class | p10 | p50 | p90 |")
    print("|---|---|---:|---:|---:|")
    for quantity, groups in stats.items():
        for key, (p10, p50, p90) in groups.items():
            print(f"| {quantity} | {key} | {p10:.1f} | {p50:.1f} | {p90:.1f} |")


# ----------------------------------------------------------------------------- running detectors


def darklens_executable() -> str:
    """The ``darklens`` entry point of this interpreter's environment (else the one on PATH)."""
    beside = Path(sys.executable).parent / "darklens"
    if beside.exists():
        return str(beside)
    found = shutil.which("darklens")
    if found is None:
        raise SystemExit("darklens is not installed (no darklens beside python, none on PATH)")
    return found


def _fresh_run_dir(run_dir: Path) -> None:
    """Remove an earlier darklens run in ``run_dir`` (and nothing that is not one)."""
    if not run_dir.exists():
        return
    entries = list(run_dir.iterdir())
    known = {"config.json", "checkpoint.pt", "weights.pt", "losses.csv", "normal_stats.json",
             "metrics.json", "test_scores.csv"}
    if entries and not any(e.name in known for e in entries):
        raise SystemExit(f"{run_dir} exists and is not a darklens run directory; "
                         "choose another --runs")
    shutil.rmtree(run_dir)


def _step(cmd: list[str], log) -> tuple[int, float, str]:
    log("$ " + shlex.join(cmd))
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    output = (proc.stdout + proc.stderr).strip()
    if output:
        log("  " + output[-2000:].replace("\n", "\n  "))
    return proc.returncode, seconds, output[-4000:]


def run_detector(detector: str, data: Path, run_dir: Path, epochs: int | None,
                 extra: list[str], log=print) -> dict[str, Any]:
    """``darklens train`` then ``darklens evaluate`` for one detector; the record for the JSON."""
    exe = darklens_executable()
    train = [exe, "train", "--detector", detector, "--data", str(data / "train"),
             "--normal", "no_sub", "--out", str(run_dir), "--test-fraction", "0",
             "--val-fraction", "0.1", "--no-progress"]
    if epochs is not None:
        train += ["--epochs", str(epochs)]
    train += extra
    evaluate = [exe, "evaluate", str(run_dir), "--data", str(data / "test")]
    record: dict[str, Any] = {"detector": detector, "commands": [shlex.join(train),
                                                                 shlex.join(evaluate)]}
    _fresh_run_dir(run_dir)
    rc, train_s, output = _step(train, log)
    record["train_seconds"] = train_s
    if rc != 0:
        return {**record, "status": "failed", "stage": "train", "returncode": rc,
                "output_tail": output}
    rc, eval_s, output = _step(evaluate, log)
    record["evaluate_seconds"] = eval_s
    record["seconds"] = train_s + eval_s
    if rc != 0:
        return {**record, "status": "failed", "stage": "evaluate", "returncode": rc,
                "output_tail": output}
    record["metrics"] = json.loads((run_dir / "metrics.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    record["train_config"] = config.get("train")
    record["split"] = config.get("split")
    record["result"] = config.get("result")
    record["score_diagnostics"] = score_diagnostics(data, run_dir)
    record["status"] = "ok"
    return record


CHI2_BINS = ((0.0, 50.0), (50.0, 200.0), (200.0, math.inf))


def score_diagnostics(data: Path, run_dir: Path) -> dict[str, Any] | None:
    """What a detector's test scores follow: their rank correlation with the S/N, and the
    AUROC of each anomaly class against all test normals in bins of substructure_chi2.

    Joins ``RUN/test_scores.csv`` (indices in darklens's reading order: class folders in class
    order, files sorted by name) with ``truth.csv``; None when either is missing.
    """
    from sklearn.metrics import roc_auc_score

    truth_path, scores_path = data / "truth.csv", run_dir / "test_scores.csv"
    if not (truth_path.exists() and scores_path.exists()):
        return None
    with open(truth_path, newline="") as fh:
        truth = {r["file"]: r for r in csv.DictReader(fh)}
    files = [f"test/{c}/{p.name}" for c in CLASSES if (data / "test" / c).is_dir()
             for p in sorted((data / "test" / c).glob("*.npy")) if not p.name.startswith(".")]
    with open(scores_path, newline="") as fh:
        scored = list(csv.DictReader(fh))
    rows = [truth[files[int(r["index"])]] for r in scored]
    score = np.array([float(r["score"]) for r in scored])
    snr = np.array([float(r["snr"]) for r in rows])
    chi2 = np.array([float(r["substructure_chi2"]) for r in rows])
    cls = np.array([r["class"] for r in rows])

    def ranks(v: np.ndarray) -> np.ndarray:
        return np.argsort(np.argsort(v)).astype(np.float64)

    out: dict[str, Any] = {"spearman_score_snr": float(np.corrcoef(ranks(score), ranks(snr))[0, 1]),
                           "auroc_by_chi2": {}}
    normal = cls == "no_sub"
    for c in ("cdm", "vortex"):
        for lo, hi in CHI2_BINS:
            pos = (cls == c) & (chi2 >= lo) & (chi2 < hi)
            if pos.any() and normal.any():
                keep = normal | pos
                auroc = float(roc_auc_score(pos[keep], score[keep]))
                out["auroc_by_chi2"][f"{c} chi2 [{lo:g}, {hi:g})"] = {"n": int(pos.sum()),
                                                                      "auroc": auroc}
    return out


def git_commit() -> str | None:
    """HEAD of the repository this script lives in (``+dirty`` with uncommitted changes)."""
    repo = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=repo, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty.strip() else "")


def print_table(records: dict[str, dict[str, Any]]) -> None:
    """Markdown table; the last two columns: Spearman rank correlation of the score with the S/N,
    and the AUROC of the anomalies with substructure_chi2 >= 200 (both classes) per class."""
    print("| detector | AUROC all | cdm | vortex | train+eval s | rho(score, S/N) "
          "| AUROC cdm, vortex at chi2 >= 200 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for det, rec in records.items():
        if rec.get("status") != "ok":
            print(f"| {det} | failed ({rec.get('stage')}) | - | - | - | - | - |")
            continue
        au = rec["metrics"]["auroc"]
        cells = [f"{au[k]:.3f}" if k in au else "-" for k in ("all", "cdm", "vortex")]
        diag = rec.get("score_diagnostics") or {}
        rho = f"{diag['spearman_score_snr']:+.2f}" if "spearman_score_snr" in diag else "-"
        bins = diag.get("auroc_by_chi2", {})
        strong = ", ".join(f"{bins[k]['auroc']:.3f}" if k in bins else "-"
                           for k in ("cdm chi2 [200, inf)", "vortex chi2 [200, inf)"))
        print(f"| {det} | {' | '.join(cells)} | {rec['seconds']:.0f} | {rho} | {strong} |")


def test_ceiling(data: Path) -> dict[str, dict[str, float]] | None:
    """The oracles of darklens.evaluate.ceiling on the test split, from truth.csv."""
    from darklens.evaluate.ceiling import ceiling_table

    path = data / "truth.csv"
    if not path.exists():
        return None
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "test"]
    labels = np.array([CLASSES.index(r["class"]) for r in rows])
    lam = np.array([float(r["substructure_chi2"] or "nan") for r in rows])
    lam[labels == 0] = 0.0
    return ceiling_table(labels, CLASSES, lam, N_PIX * N_PIX)


def print_ceiling(ceiling: dict[str, dict[str, float]] | None) -> None:
    """Two more rows: what the test images allow (see darklens.evaluate.ceiling)."""
    if not ceiling:
        return
    for key, label in (("ceiling", "ceiling (matched filter)"),
                       ("chi2_oracle", "chi2 oracle (true smooth lens)")):
        row = ceiling[key]
        cells = " | ".join(f"{row[k]:.3f}" if k in row else "-" for k in ("all", "cdm", "vortex"))
        print(f"| {label} | {cells} | - | - | - |")


def run_all(args: argparse.Namespace, argv: list[str]) -> int:
    data = Path(args.data)
    for sub in ("train", "test"):
        if not (data / sub).is_dir():
            raise SystemExit(f"{data / sub}: missing (make the set with `make --out {data}`)")
    detectors = [d for d in args.detectors.split(",") if d]
    extra = parse_extra(args.extra)
    out = Path(args.out)
    records: dict[str, dict[str, Any]] = {}
    if args.resume and out.exists():
        old = json.loads(out.read_text()).get("records", {})
        records = {k: v for k, v in old.items() if v.get("status") == "ok"}
        print(f"resuming: {', '.join(records) or 'no'} finished detector(s) read from {out}",
              file=sys.stderr)
    manifest_path = data / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else None
    start = time.perf_counter()
    ceiling = test_ceiling(data)

    def write() -> None:
        payload = {
            "command": shlex.join(["python", "benchmarks/cross_simulator.py", *argv]),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                        "python": platform.python_version()},
            "git_commit": git_commit(), "data": str(data.resolve()),
            "data_manifest": None if manifest is None else
            {k: manifest.get(k) for k in ("seed", "counts", "lenstronomy", "summary")},
            "epochs": args.epochs, "extra": extra, "wall_seconds": time.perf_counter() - start,
            "ceiling": ceiling, "records": records,
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        _write_text(out, json.dumps(payload, indent=2) + "\n")

    for det in detectors:
        if det in records:
            continue
        print(f"[{det}]", file=sys.stderr)
        rec = run_detector(det, data, Path(args.runs) / det, args.epochs, extra.get(det, []),
                           log=lambda msg: print(msg, file=sys.stderr))
        records[det] = rec
        write()
    write()
    print_table({d: records[d] for d in detectors if d in records})
    print_ceiling(ceiling)
    print(f"wrote {out}")
    return 0 if all(records[d].get("status") == "ok" for d in detectors) else 1


# ----------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="step", required=True)
    m = sub.add_parser("make", help="render the lenstronomy data set in DeepLense's layout")
    m.add_argument("--out", required=True, help="data set folder (DIR)")
    m.add_argument("--n-train", type=int, default=1000, help="no_sub training images")
    m.add_argument("--n-test", type=int, default=300, help="test images per class")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--workers", type=int, default=2)
    m.add_argument("--regime", choices=sorted(REGIMES), default="faint",
                   help="brightness: faint (whole-image S/N ~40-120) or bright (S/N of "
                   "DeepLense-like data, ~1000-1800)")
    r = sub.add_parser("run", help="darklens train + evaluate on a made set, per detector")
    r.add_argument("--data", required=True, help="data set folder written by `make`")
    r.add_argument("--detectors", default="knn,dcae,infotheoretic", help="comma-separated")
    r.add_argument("--out", default="benchmarks/results/cross_simulator.json")
    r.add_argument("--runs", default="runs/cross_simulator",
                   help="run directories go to RUNS/<detector> (an earlier run there is removed)")
    r.add_argument("--epochs", type=int, help="passed to darklens train (default: its own)")
    r.add_argument("--extra", action="append", default=[], metavar="NAME='ARGS'",
                   help="more `darklens train` arguments for detector NAME (repeatable), e.g. "
                   "--extra residual-chi2='--instrument pixel_scale=0.08'")
    r.add_argument("--resume", action="store_true",
                   help="keep the detectors already finished in --out")
    args = p.parse_args(argv)
    if args.step == "make":
        if args.n_train < 1 or args.n_test < 1 or args.workers < 1:
            p.error("--n-train, --n-test and --workers must be positive")
        rows = make(Path(args.out), args.n_train, args.n_test, args.seed, args.workers,
                    regime=args.regime)
        print_summary(summary(rows))
        print(f"wrote {args.out} (truth.csv, manifest.json)")
        return 0
    return run_all(args, argv)


if __name__ == "__main__":
    sys.exit(main())
