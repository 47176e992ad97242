"""`darklens show`: picture galleries of a data set, one PNG per class and one of all classes."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from darklens.data.formats import load_dataset
from darklens.report.gallery import gallery


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("show", help="write PNG galleries of a data set")
    p.add_argument("data", help="HDF5 shard(s) or DeepLense class folders")
    p.add_argument("--out", help="directory for the PNGs (default: DATA/gallery)")
    p.add_argument("--per-class", type=int, default=6)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    data = load_dataset(args.data)
    out = Path(args.out) if args.out else Path(args.data) / "gallery"
    name = data.attrs.get("preset", {}).get("name", Path(args.data).name) if data.attrs else ""
    written = [gallery(data, out / "gallery.png", args.per_class, title=f"darklens: {name}")]
    for i, c in enumerate(data.class_names):
        if np.any(data.labels == i):
            written.append(
                gallery(
                    data.select(data.labels == i),
                    out / f"gallery_{c}.png",
                    args.per_class,
                    title=f"{name}: {c}",
                )
            )
    for path in written:
        print(path)
    return 0
