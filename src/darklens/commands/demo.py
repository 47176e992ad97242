"""`darklens demo`: the main job end to end on the built-in simulator.

Simulates the ``demo`` preset (every class), writes picture galleries, and prints where they are
and a summary of what was simulated. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from darklens.data.formats import load_dataset
from darklens.report.gallery import gallery
from darklens.simulate.presets import get_preset, list_presets
from darklens.simulate.writer import simulate_to_disk


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="simulate a demo data set and write its gallery")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--preset", default="demo", choices=list_presets())
    p.add_argument("--n-per-class", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    preset = get_preset(args.preset)
    t0 = time.perf_counter()
    with tqdm(total=3 * args.n_per_class, desc=f"simulate {preset.name}", unit="img") as bar:
        simulate_to_disk(
            preset, out / "data", args.n_per_class, args.seed, chunk_size=500, progress=bar.update
        )
    data = load_dataset(out / "data")
    path = gallery(data, out / "gallery.png", 6, title=f"darklens: {preset.name} preset")
    m = data.metadata
    print(
        f"\n{len(data)} images ({preset.n_pix}x{preset.n_pix}) in {out / 'data'}, "
        f"{time.perf_counter() - t0:.0f} s; gallery: {path}"
    )
    print(f"{'class':<8} {'n':>5} {'median S/N':>11} {'median chi2':>12} {'median f_sub':>13}")
    for i, name in enumerate(data.class_names):
        sel = data.labels == i
        print(
            f"{name:<8} {int(sel.sum()):>5} {np.nanmedian(m['snr'][sel]):>11.1f} "
            f"{np.nanmedian(m['substructure_chi2'][sel]):>12.1f} "
            f"{np.nanmedian(m['f_sub'][sel]):>13.4f}"
        )
    return 0
