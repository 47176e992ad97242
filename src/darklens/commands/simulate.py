"""`darklens simulate`: write a simulated data set (HDF5 shards or DeepLense class folders)."""

from __future__ import annotations

import argparse

from darklens.data.lensdata import CLASSES, check_classes
from darklens.errors import DarklensError
from darklens.progress import progress_bar
from darklens.simulate.backend import BACKENDS, ENV_VAR, backend_for_job, resolve_backend
from darklens.simulate.presets import get_preset, list_presets
from darklens.simulate.writer import simulate_to_disk


def parse_overrides(items: list[str] | None) -> dict[str, str]:
    """``["field=value", ...]`` -> dict, with a clear error for a malformed item."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise DarklensError(f"--set needs FIELD=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise DarklensError(f"--shard needs I/N (e.g. 0/4), got {text!r}") from None
    if not 0 <= i < n:
        raise DarklensError(f"--shard I/N needs 0 <= I < N, got {text!r}")
    return i, n


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="simulate lensing images of each class to disk")
    p.add_argument("--preset", default="demo", choices=list_presets())
    p.add_argument("--n-per-class", type=int, required=True)
    p.add_argument("--classes", default=",".join(CLASSES), help="comma-separated class names")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--format", choices=("hdf5", "npy"), default="hdf5")
    p.add_argument("--workers", type=int, default=1, help="worker processes")
    p.add_argument("--shard", default="0/1", help="I/N: write only chunks k with k %% N == I")
    p.add_argument("--chunk-size", type=int, default=1000, help="images per shard file")
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        help="rendering path: compiled (fused C++ via torch.compile, several times faster, a "
        "one-off compile of some seconds per class), eager, or auto (compiled where a C++ "
        f"compiler is found; the default, or ${ENV_VAR}). The two agree to float rounding; "
        "each shard records its path",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="FIELD=VALUE",
        help="override a preset field (priors as VALUE or KIND:LOW:HIGH)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.n_per_class < 1:
        raise DarklensError("--n-per-class must be at least 1")
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    check_classes(classes)
    try:
        preset = get_preset(args.preset, parse_overrides(args.set))
    except (KeyError, ValueError) as err:
        raise DarklensError(f"bad --set: {err}") from None
    total = args.n_per_class * len(classes)
    try:
        job_backend = backend_for_job(args.backend, total)
        backend = resolve_backend(job_backend)
    except RuntimeError as err:
        raise DarklensError(str(err)) from None
    with progress_bar(total=total, desc=f"simulate {preset.name}", unit="img") as bar:
        summary = simulate_to_disk(
            preset,
            args.out,
            args.n_per_class,
            args.seed,
            classes,
            args.format,
            args.chunk_size,
            parse_shard(args.shard),
            args.workers,
            progress=bar.update,
            backend=job_backend,
        )
    print(
        f"{summary['images']} images in {args.out} ({summary['written']} chunks written, "
        f"{summary['skipped']} already there); preset {preset.name}, seed {args.seed}, "
        f"{backend} renderer"
    )
    return 0
