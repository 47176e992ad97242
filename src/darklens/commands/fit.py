"""`darklens fit DATA --out DIR`: fit the smooth lens to every image and keep what is left over.

DATA is anything ``load_dataset`` reads (HDF5 shards, DeepLense class folders, a folder of
``.npy`` images). The instrument is ``--instrument`` if given, else the simulator preset recorded
in the data, else the default (:func:`darklens.fit.instrument.instrument_for_data`); fit.json
records which (``instrument.source``). DIR receives, each file written atomically:

- ``params.csv``: one row per image: ``source`` (its file, or ``DATA[i]``), ``class`` (empty
  for unlabelled images), ``converged`` (0/1), ``chi2_red``, ``iterations``, then every fitted
  parameter (sorted by name);
- ``residuals.h5``: ``residual`` ((data - model) / sigma) and ``model`` (N, H, W) float32,
  ``u`` (N, K) (the unconstrained parameters: a start for a later fit), ``converged``,
  ``chi2_red``, ``iterations``, ``source``, ``label`` and a ``params`` group; its attributes
  hold the instrument and the fit options as JSON;
- ``fit.json``: instrument, options, data, counts, the median reduced chi-square of the
  converged fits, timing, darklens version and date. It is written last and removed before
  the other files are replaced, so a DIR without it holds no finished fit.

Images the fitter could not fit (a fit that ended non-finite) have ``converged`` 0 in
params.csv and are named on stderr; the exit code is still 0.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from darklens import __version__
from darklens.data.formats import image_names, load_dataset
from darklens.errors import DarklensError, DataError
from darklens.fit.fitter import FitOptions, SmoothFit, fit_smooth_lens
from darklens.fit.instrument import Instrument, instrument_for_data
from darklens.io import atomic_path, write_json_atomic, write_text_atomic
from darklens.progress import is_terminal

PARAMS_CSV = "params.csv"
RESIDUALS_H5 = "residuals.h5"
FIT_JSON = "fit.json"
NAMED_ON_STDERR = 10


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fit", help="fit the smooth lens to every image; write parameters "
                       "and residual maps")
    p.add_argument("data", metavar="DATA", help="data set (HDF5 shards, DeepLense class "
                   "folders, a folder of .npy images)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--instrument", metavar="KEY=VALUE,...",
                   help="pixel_scale=ARCSEC,psf_fwhm=ARCSEC|fit[,supersample=N][,noise=SIGMA]"
                   "[,lens_light=0|1]; default: the preset's own instrument for simulator data, "
                   "else a 0.08 arcsec pixel and a PSF fitted per image")
    p.add_argument("--batch-size", type=int, help="images fitted together "
                   f"(default {FitOptions.batch_size})")
    p.add_argument("--iterations", type=int, help="Levenberg-Marquardt iterations per stage "
                   f"(default {FitOptions.iterations})")
    p.add_argument("--limit", type=int, metavar="N", help="fit only the first N images")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for flag in ("batch_size", "iterations", "limit"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise DarklensError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise DarklensError(f"--out {out}: exists and is not a directory")

    data = load_dataset(args.data)
    shape = tuple(data.images.shape)
    if len(shape) != 4 or shape[1] != 1:
        raise DataError(f"{args.data}: images of shape {shape[1:]}; darklens fit takes "
                        "one-channel images (N, 1, H, W)")
    if shape[2] != shape[3]:
        raise DataError(f"{args.data}: images are {shape[2]}x{shape[3]} pixels; the fitter "
                        "takes square images")
    n = len(data) if args.limit is None else min(args.limit, len(data))
    if n == 0:
        raise DataError(f"{args.data}: no images to fit")
    names = image_names(data, args.data)[:n]
    size = int(shape[-1])
    inst = instrument_for_data(args.instrument, data, size)
    given = {"batch_size": args.batch_size, "iterations": args.iterations}
    options = FitOptions(**{k: v for k, v in given.items() if v is not None})

    start = time.perf_counter()
    fit = fit_smooth_lens(data.images[:n], inst, options,
                          progress=not args.no_progress and is_terminal())  # logs: no redraws
    seconds = time.perf_counter() - start

    classes = [data.class_names[int(lab)] if lab >= 0 else "" for lab in data.labels[:n]]
    ok = np.asarray(fit.converged, dtype=bool)
    chi2_ok = np.asarray(fit.chi2_red, dtype=np.float64)[ok]
    median = float(np.median(chi2_ok)) if chi2_ok.size else None
    summary = {
        "instrument": inst.to_dict(),
        "options": asdict(options),
        "data": {"path": str(Path(args.data).resolve()), "n_images": len(data),
                 "limit": args.limit},
        "n": n,
        "n_converged": int(ok.sum()),
        "median_chi2_red": median,  # of the converged fits
        "seconds": round(seconds, 3),
        "images_per_second": n / seconds if seconds > 0 else None,
        "darklens_version": __version__,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "files": [PARAMS_CSV, RESIDUALS_H5, FIT_JSON],
    }

    out.mkdir(parents=True, exist_ok=True)
    (out / FIT_JSON).unlink(missing_ok=True)  # no fit.json: the set is not finished
    write_text_atomic(out / PARAMS_CSV, params_csv(fit, names, classes))
    write_residuals(out / RESIDUALS_H5, fit, names, data.labels[:n], data.class_names, inst,
                    options, args.data)
    write_json_atomic(out / FIT_JSON, summary)

    rate = f"{n / seconds:.2f}" if seconds > 0 else "-"
    chi2_text = "-" if median is None else f"{median:.3f}"
    print(f"fitted {n} image(s) in {seconds:.1f} s ({rate} images/s), median reduced chi2 "
          f"{chi2_text}, {n - int(ok.sum())} not converged; wrote {out}")
    if not ok.all():
        bad = [_short(names[i], args.data) for i in np.flatnonzero(~ok)]
        print(f"darklens fit: not fitted: {_listing(bad)} (converged 0 in {out / PARAMS_CSV})",
              file=sys.stderr)
    return 0


def params_csv(fit: SmoothFit, names: list[str], classes: list[str]) -> str:
    """The text of params.csv (see the module docstring)."""
    keys = sorted(fit.params)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["source", "class", "converged", "chi2_red", "iterations", *keys])
    for i, (name, cls) in enumerate(zip(names, classes, strict=True)):
        w.writerow([name, cls, int(bool(fit.converged[i])), repr(float(fit.chi2_red[i])),
                    int(fit.iterations[i])] + [repr(float(fit.params[k][i])) for k in keys])
    return buf.getvalue()


def write_residuals(path: Path, fit: SmoothFit, names: list[str], labels: np.ndarray,
                    class_names: tuple[str, ...], inst: Instrument, options: FitOptions,
                    data_path: str) -> None:
    """residuals.h5, through a hidden temp file renamed into place."""
    import h5py

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("residual", data=np.asarray(fit.residual, dtype=np.float32))
        f.create_dataset("model", data=np.asarray(fit.model, dtype=np.float32))
        f.create_dataset("u", data=np.asarray(fit.u, dtype=np.float32))
        f.create_dataset("converged", data=np.asarray(fit.converged, dtype=bool))
        f.create_dataset("chi2_red", data=np.asarray(fit.chi2_red, dtype=np.float64))
        f.create_dataset("iterations", data=np.asarray(fit.iterations, dtype=np.int64))
        f.create_dataset("source", data=names, dtype=h5py.string_dtype())
        f.create_dataset("label", data=np.asarray(labels, dtype=np.int64))
        group = f.create_group("params")
        for key in sorted(fit.params):
            group.create_dataset(key, data=np.asarray(fit.params[key], dtype=np.float64))
        f.attrs["instrument"] = json.dumps(inst.to_dict())
        f.attrs["options"] = json.dumps(asdict(options))
        f.attrs["class_names"] = json.dumps(list(class_names))
        f.attrs["data"] = str(Path(data_path).resolve())
        f.attrs["darklens_version"] = __version__


def _short(name: str, root: str) -> str:
    """``name`` relative to the data folder where it lies below it."""
    try:
        rel = Path(name).relative_to(root)
    except ValueError:
        return name
    return Path(name).name if str(rel) == "." else str(rel)


def _listing(items: list[str], limit: int = NAMED_ON_STDERR) -> str:
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more
