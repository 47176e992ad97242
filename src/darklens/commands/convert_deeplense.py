"""`darklens convert-deeplense SRC DST [--trust-pickle]`: public DeepLense files -> plain .npy."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert-deeplense",
        help="convert public DeepLense class folders into plain .npy files plus labels.csv",
        description=(
            "Read a DeepLense tree (class folders such as no_sub/ cdm/ axion/) and write plain, "
            "never-pickled .npy images into DST/no_sub, DST/cdm, DST/vortex plus DST/labels.csv "
            "(with log10_axion_mass where the file stores an axion mass in eV)."
        ),
    )
    parser.add_argument("src", type=Path, help="the DeepLense folder to read")
    parser.add_argument("dst", type=Path, help="the folder to write")
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help=(
            "also read files holding pickled object arrays (the public axion files store "
            "[image, mass] that way); this runs pickle, which can execute code: only for "
            "files you trust"
        ),
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from darklens.data.deeplense import convert_deeplense

    counts = convert_deeplense(args.src, args.dst, trust_pickle=args.trust_pickle, log=print)
    print(f"wrote {sum(counts.values())} images to {args.dst}")
    return 0
