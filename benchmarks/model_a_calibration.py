"""How strong is the substructure in DeepLense's Model A? Calibrate ours on their scores.

DeepLense published the per-image reconstruction errors of its 2020 autoencoders on Model A
(``../shared/deeplense-reference/unsupervised_lensing_2020_scores.npz``). An autoencoder trained
on smooth lenses cannot reproduce substructure, so the excess mean error of anomalies over normal
images estimates the substructure's residual power per pixel in min-max units. This script puts
that next to the residual power of our ``model-a`` preset for the substructure strengths that the
public generator's code paths imply (see docs/presets.md, "How model-a was calibrated"):

- ``issue text``: total mass fraction 0.01 of the Einstein mass;
- ``code default``: each of 25 point masses with einstein_radius sqrt(0.01) / 25 * theta_E
  (total fraction 0.0004);
- ``driver, fractions``: each of 25 with fraction U[0.001, 0.003] (total ~0.05; our preset);
- ``driver, masses``: each of 25 with 0.8-1.2e10 M_sun, Einstein radius from luminosity
  distances (total fraction ~0.28 of theta_E = 1.2").

Nothing is trained: residual powers come from noiseless renders with and without substructure.

    python benchmarks/model_a_calibration.py --out benchmarks/results/model-a-calibration.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from darklens import __version__
from darklens.simulate import cosmology
from darklens.simulate.diagnostics import published_excess, residual_power
from darklens.simulate.presets import get_preset

SCORES = "deeplense-reference/unsupervised_lensing_2020_scores.npz"


def candidate_fractions() -> dict[str, float]:
    """Total substructure mass fraction (of the Einstein mass) of each reading of the code."""
    theta_1e10 = float(cosmology.einstein_radius_point_mass(1e10, 0.5, 1.0, "deeplense-luminosity"))
    return {
        "code default": 25 * (0.01**0.5 / 25) ** 2,
        "issue text": 0.01,
        "driver, fractions (preset)": 0.05,
        "driver, masses": 25 * theta_1e10**2 / 1.2**2,
    }


def find_scores(shared: str | None) -> Path:
    """The published score file, from --shared or the usual places."""
    here = Path(__file__).resolve().parent.parent
    for base in [shared, here.parent / "shared", "/work/shared"]:
        if base and (Path(base) / SCORES).is_file():
            return Path(base) / SCORES
    raise SystemExit(f"error: {SCORES} not found; pass --shared DIR")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-images", type=int, default=300, help="per class (default 300)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shared", help="folder holding deeplense-reference/")
    p.add_argument("--out", type=Path, help="write the results as JSON")
    args = p.parse_args(argv)

    with np.load(find_scores(args.shared), allow_pickle=False) as f:
        scores = {k: f[k] for k in f.files}
    rows = [
        {"source": f"DeepLense 2020 {m.upper()} (published scores)", **published_excess(
            scores, m, "model_a")}
        for m in ("aae", "vae", "dcae")
    ]
    start = time.perf_counter()
    for name, fraction in candidate_fractions().items():
        preset = get_preset("model-a", {"cdm_fraction": repr(fraction),
                                        "vortex_fraction": repr(fraction)})
        row = {"source": f"darklens model-a, {name}", "f_sub": fraction}
        for cls in ("cdm", "vortex"):
            power = residual_power(preset, cls, args.n_images, seed=args.seed)
            row[cls] = power.summary()["substructure_mean"]
            row["noise"] = power.summary()["noise_mean"]
        rows.append(row)
    elapsed = time.perf_counter() - start

    print("Excess residual power per pixel (min-max units), Model A, 150x150")
    print(f"{'source':52s} {'f_sub':>7s} {'cdm':>10s} {'vortex':>10s}")
    for r in rows:
        f_sub = f"{r['f_sub']:.4f}" if "f_sub" in r else ""
        print(f"{r['source']:52s} {f_sub:>7s} {r['cdm']:10.2e} {r['vortex']:10.2e}")
    print(f"(noise floor of our model-a: {rows[-1]['noise']:.1e}; "
          f"AAE's no_sub reconstruction error: {np.mean(scores['aae__model_a__no_sub']):.1e})")
    print(f"{args.n_images} images per class and setting; {elapsed:.0f} s")
    if args.out:
        out = {"rows": rows, "n_images": args.n_images, "seed": args.seed,
               "version": __version__, "date": time.strftime("%Y-%m-%d"),
               "machine": platform.platform(), "seconds": elapsed}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(out, indent=2))
        tmp.replace(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
