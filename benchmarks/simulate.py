"""Simulation speed: darklens against lenstronomy on the same configuration, in one run.

Configuration (both codes): SIE + external shear + 25 point-mass subhalos, elliptical Sersic
source, Gaussian PSF, Gaussian noise, no supersampling, float64 in lenstronomy and float32 in
darklens, at 64x64 and 150x150, on the same number of threads. Prints a table of images/s and
the ratio, and writes JSON.

    python benchmarks/simulate.py --out benchmarks/results/simulate.json [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import UTC, datetime

import numpy as np
import torch

from darklens import __version__
from darklens.io import write_json_atomic
from darklens.simulate.presets import get_preset, with_overrides
from darklens.simulate.simulator import simulate_batch


def config(n_pix: int, pixel_scale: float):
    return with_overrides(
        get_preset("demo"),
        {
            "n_pix": str(n_pix),
            "pixel_scale": str(pixel_scale),
            "supersample": "1",
            "cdm_count": "25",
            "cdm_count_poisson": "false",
            "psf_fwhm": "0.12",
            "noise": "snr",
            "lens_light_amp": "0",
        },
    )


def time_darklens(n_pix: int, pixel_scale: float, n: int, batch: int) -> float:
    preset = config(n_pix, pixel_scale)
    simulate_batch(preset, "cdm", np.arange(batch), seed=0, substructure_chi2=False)  # warm up
    t0 = time.perf_counter()
    for lo in range(0, n, batch):
        simulate_batch(preset, "cdm", np.arange(lo, lo + batch), seed=0, substructure_chi2=False)
    return n / (time.perf_counter() - t0)


def time_lenstronomy(n_pix: int, pixel_scale: float, n: int) -> float:
    from lenstronomy.Data.imaging_data import ImageData
    from lenstronomy.Data.psf import PSF
    from lenstronomy.ImSim.image_model import ImageModel
    from lenstronomy.LensModel.lens_model import LensModel
    from lenstronomy.LightModel.light_model import LightModel
    from lenstronomy.Util import param_util

    rng = np.random.default_rng(0)
    half = (n_pix - 1) / 2 * pixel_scale
    data = ImageData(
        image_data=np.zeros((n_pix, n_pix)),
        ra_at_xy_0=-half,
        dec_at_xy_0=-half,
        transform_pix2angle=np.diag([pixel_scale, pixel_scale]),
    )
    psf = PSF(psf_type="GAUSSIAN", fwhm=0.12, pixel_size=pixel_scale, truncation=4)
    model = ImageModel(
        data,
        psf,
        lens_model_class=LensModel(["SIE", "SHEAR"] + ["POINT_MASS"] * 25),
        source_model_class=LightModel(["SERSIC_ELLIPSE"]),
        kwargs_numerics={"supersampling_factor": 1},
    )
    t0 = time.perf_counter()
    for _ in range(n):
        e1, e2 = param_util.phi_q2_ellipticity(rng.uniform(0, np.pi), rng.uniform(0.7, 1))
        kw = [
            {"theta_E": rng.uniform(1, 1.4), "e1": e1, "e2": e2, "center_x": 0.0, "center_y": 0.0},
            {"gamma1": rng.uniform(-0.05, 0.05), "gamma2": rng.uniform(-0.05, 0.05)},
        ]
        r, t = rng.uniform(0.7, 1.7, 25), rng.uniform(0, 2 * np.pi, 25)
        kw += [
            {"theta_E": te, "center_x": x, "center_y": y}
            for te, x, y in zip(
                rng.uniform(0.02, 0.17, 25), r * np.cos(t), r * np.sin(t), strict=True
            )
        ]
        se1, se2 = param_util.phi_q2_ellipticity(rng.uniform(0, np.pi), rng.uniform(0.6, 1))
        src = [
            {
                "amp": 1.0,
                "R_sersic": 0.25,
                "n_sersic": 1.0,
                "e1": se1,
                "e2": se2,
                "center_x": rng.uniform(-0.2, 0.2),
                "center_y": rng.uniform(-0.2, 0.2),
            }
        ]
        img = model.image(kw, src)
        img = img + rng.normal(0, 0.02 * img.max(), img.shape)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n", type=int, default=1024, help="darklens images per size")
    ap.add_argument("--n-lenstronomy", type=int, default=200)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=3, help="best of this many timings per cell")
    ap.add_argument("--out", default="benchmarks/results/simulate.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    rows = []
    for n_pix, scale in ((64, 0.08), (150, 0.05)):
        n = args.n if n_pix == 64 else max(args.n // 4, args.batch)
        n_l = args.n_lenstronomy if n_pix == 64 else args.n_lenstronomy // 2
        # best of several timings: the least disturbed by other processes
        ours = max(time_darklens(n_pix, scale, n, args.batch) for _ in range(args.repeat))
        theirs = max(time_lenstronomy(n_pix, scale, n_l) for _ in range(args.repeat))
        rows.append(
            {
                "n_pix": n_pix,
                "darklens_img_per_s": ours,
                "lenstronomy_img_per_s": theirs,
                "ratio": ours / theirs,
            }
        )
    print(
        f"\nthreads: {args.threads}  ({platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores)"
    )
    print(f"{'size':>8} {'darklens img/s':>15} {'lenstronomy img/s':>18} {'ratio':>7}")
    for r in rows:
        print(
            f"{r['n_pix']:>5}x{r['n_pix']:<3}{r['darklens_img_per_s']:>14.0f} "
            f"{r['lenstronomy_img_per_s']:>18.0f} {r['ratio']:>7.1f}"
        )
    import lenstronomy

    write_json_atomic(
        args.out,
        {
            "benchmark": "simulate",
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": platform.platform(),
            "cpu_count": os.cpu_count(),
            "threads": args.threads,
            "repeat": args.repeat,
            "load_average": os.getloadavg(),
            "torch": torch.__version__,
            "lenstronomy": lenstronomy.__version__,
            "darklens": __version__,
            "rows": rows,
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
