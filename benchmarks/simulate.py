"""Simulation speed: darklens against lenstronomy on the same configuration, in one run.

Configuration (both codes): SIE + external shear + 25 point-mass subhalos, elliptical Sersic
source, Gaussian PSF, Gaussian noise, no supersampling, float64 in lenstronomy and float32 in
darklens, at 64x64 and 150x150, on the same number of threads. darklens is timed on both of its
paths, eager PyTorch and compiled (``darklens.simulate.compiled``); the compiled path's first
call, which compiles its graphs, is timed separately from the throughput (with an empty
inductor cache, so it is the cold cost a new machine pays). Prints a table of images/s and the
ratios, the load average before and after, and writes JSON.

    python benchmarks/simulate.py --out benchmarks/results/simulate.json [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from datetime import UTC, datetime

import numpy as np
import torch

from darklens import __version__
from darklens.io import write_json_atomic
from darklens.simulate import backend as sim_backend
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


class Clock:
    """Wall-clock and CPU time (this process) of a block: ``rates(n)`` is images/s by each.

    The CPU rate leaves out the time other processes held the core, so on a shared machine
    it is the steadier of the two; with one thread both count the same work.
    """

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu

    def rates(self, n: int) -> tuple[float, float]:
        return n / self.wall, n / self.cpu


def time_darklens(
    n_pix: int, pixel_scale: float, n: int, batch: int, backend: str
) -> tuple[tuple[float, float], float]:
    """((wall, CPU) images/s, seconds of the first call) of the darklens path ``backend``."""
    preset = config(n_pix, pixel_scale)

    def run(lo: int) -> None:
        simulate_batch(
            preset, "cdm", np.arange(lo, lo + batch), seed=0, substructure_chi2=False,
            backend=backend,
        )

    t0 = time.perf_counter()
    run(0)  # warm up (the compiled path compiles its graphs here, once per process)
    first = time.perf_counter() - t0
    with Clock() as clock:
        for lo in range(0, n, batch):
            run(lo)
    return clock.rates(n), first


def time_lenstronomy(n_pix: int, pixel_scale: float, n: int) -> tuple[float, float]:
    """(wall, CPU) images/s of lenstronomy on the same configuration."""
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
    clock = Clock().__enter__()
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
    clock.__exit__()
    return clock.rates(n)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n", type=int, default=1024, help="darklens images per size")
    ap.add_argument("--n-lenstronomy", type=int, default=200)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=3, help="best of this many timings per cell")
    ap.add_argument("--sizes", default="64,150", help="image sizes, of 64 and 150")
    ap.add_argument(
        "--warm-cache", action="store_true",
        help="keep inductor's on-disk cache (default: an empty one, to time a cold compile)",
    )
    ap.add_argument("--out", default="benchmarks/results/simulate.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    if not args.warm_cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="darklens-bench-inductor-")
    load_before = os.getloadavg()
    has_compiled = sim_backend.compiled_available()
    rows = []
    scales = {64: 0.08, 150: 0.05}
    for n_pix in (int(v) for v in args.sizes.split(",")):
        scale = scales[n_pix]
        n = args.n if n_pix == 64 else max(args.n // 4, args.batch)
        n_l = args.n_lenstronomy if n_pix == 64 else args.n_lenstronomy // 2
        row: dict = {"n_pix": n_pix}
        backends = ("eager", "compiled") if has_compiled else ("eager",)
        runs: dict[str, list] = {name: [] for name in (*backends, "lenstronomy")}
        # the codes take turns, so a change in the machine's load hits all of them; the best
        # of several timings is the least disturbed by other processes
        for _ in range(args.repeat):
            for backend in backends:
                rates, first = time_darklens(n_pix, scale, n, args.batch, backend)
                runs[backend].append(rates)
                # the first call of the first run compiles; later runs reuse the graphs
                row.setdefault(f"darklens_{backend}_first_call_s", first)
            runs["lenstronomy"].append(time_lenstronomy(n_pix, scale, n_l))
        for name, rates in runs.items():
            key = name if name == "lenstronomy" else f"darklens_{name}"
            row[f"{key}_img_per_s"] = max(r[0] for r in rates)
            row[f"{key}_cpu_img_per_s"] = max(r[1] for r in rates)
        for backend in ("eager", "compiled"):
            if f"darklens_{backend}_img_per_s" in row:
                row[f"ratio_{backend}"] = (
                    row[f"darklens_{backend}_img_per_s"] / row["lenstronomy_img_per_s"]
                )
                row[f"ratio_{backend}_cpu"] = (
                    row[f"darklens_{backend}_cpu_img_per_s"] / row["lenstronomy_cpu_img_per_s"]
                )
        rows.append(row)
    load_after = os.getloadavg()
    print(
        f"\nthreads: {args.threads}  ({platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores), load average {load_before[0]:.1f} before, "
        f"{load_after[0]:.1f} after"
    )
    if not has_compiled:
        print(f"compiled path unavailable: {sim_backend._state['error']}")
    nan = float("nan")
    for clock, suffix in (("wall clock", ""), ("CPU time", "_cpu")):
        print(f"\nimages/s by {clock} (best of {args.repeat}):")
        print(
            f"{'size':>8} {'eager':>8} {'compiled':>9} {'lenstronomy':>12} "
            f"{'ratio eager':>12} {'ratio compiled':>15}"
        )
        for r in rows:
            print(
                f"{r['n_pix']:>5}x{r['n_pix']:<3}{r[f'darklens_eager{suffix}_img_per_s']:>8.0f} "
                f"{r.get(f'darklens_compiled{suffix}_img_per_s', nan):>9.0f} "
                f"{r[f'lenstronomy{suffix}_img_per_s']:>12.0f} "
                f"{r[f'ratio_eager{suffix}']:>12.1f} {r.get(f'ratio_compiled{suffix}', nan):>15.1f}"
            )
    print(
        "\nfirst call of the compiled path (compiles its graphs, inductor cache "
        f"{'warm' if args.warm_cache else 'cold'}): "
        + ", ".join(
            f"{r['n_pix']}x{r['n_pix']} {r.get('darklens_compiled_first_call_s', nan):.1f} s"
            for r in rows
        )
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
            "batch": args.batch,
            "load_average_before": load_before,
            "load_average_after": load_after,
            "inductor_cache": "warm" if args.warm_cache else "cold",
            "compiled_available": has_compiled,
            "torch": torch.__version__,
            "lenstronomy": lenstronomy.__version__,
            "darklens": __version__,
            "rows": rows,
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
