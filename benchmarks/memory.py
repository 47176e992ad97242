"""Peak memory of `darklens train`, `evaluate`, `score`, `regress predict` and `benchmark` on
N and factor*N images.

Writes synthetic lens-like images (Gaussian rings plus noise; a blob for the anomalous
classes; the content does not matter for memory) as shards of 1000 images, then for each data
size runs `darklens train` in a child process and reads that child's peak resident set size
(``os.wait4`` -> ``ru_maxrss``):

- ``streamed``: the command as shipped, images read on demand through a cache of
  ``--cache-mb`` MiB (``darklens.data.shards.ShardDataset``);
- ``loaded``: the same command with the former behaviour, the whole data set loaded into
  memory first (``load_dataset``), for comparison.

Then (``--commands``) `darklens evaluate` and `darklens score`, on each data set in a child
process, of a run trained on a third set of N images (so that every image of both sets is
scored): both stream their inputs a batch at a time
(:mod:`darklens.data.stream`), so their peak RSS should not grow with the data beyond a few
bytes per image (labels, names, scores).

``regress`` (in ``--commands``): `darklens regress predict` (``--no-tta``, draws saved with
``--samples``) on each data set, of a regression run (``--target theta_e``, the ring radius
written as metadata) trained on the third set; it streams its inputs too. ``benchmark``:
`darklens benchmark --data` on each data set (the detector, 1 epoch, ``--no-report``): the
shards are opened as `train` opens them (cache of ``--cache-mb``) and the test images (a fifth
of the normals and two thirds of the anomalies) are scored a batch at a time. ``--report
streamed,loaded`` measures it with its HTML report instead (``benchmark+report``): streamed as
shipped (the report reads only the images it shows), or loaded, the report's former behaviour
of loading the whole data set, for comparison.

Prints a table and writes JSON. The growth from N to factor*N of the streamed runs should
stay within the cache (plus ~40 bytes of labels and statistics per image), while the loaded
runs grow with the data.

    python benchmarks/memory.py --n 2000 --factor 10 --size 64 --epochs 1 --cache-mb 32 \\
        --out benchmarks/results/memory.json
    python benchmarks/memory.py --n 2000 --factor 10 --commands regress,benchmark \\
        --out benchmarks/results/memory-regress.json
    python benchmarks/memory.py --n 2000 --factor 10 --commands benchmark \\
        --report streamed,loaded --out benchmarks/results/memory-benchmark-report.json
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _record import finish, header  # benchmarks/_record.py, beside this script
from darklens.data.formats import write_shard
from darklens.data.lensdata import LensData

# The former path, for comparison only: `darklens train` with shards loaded whole.
LOADED_DRIVER = (
    "import sys, darklens.commands.train as t\n"
    "t.is_shard_path = lambda path: False\n"
    "from darklens.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)
# The report's former path, for comparison only: `darklens benchmark` whose report loads the
# data whole.
REPORT_LOADED_DRIVER = (
    "import sys, darklens.report.html as h\n"
    "h.is_shard_path = lambda path: False\n"
    "from darklens.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def synthetic_shards(out: Path, n: int, size: int, seed: int, per_shard: int = 1000) -> None:
    """``n`` images (a third per class, classes interleaved by shard) as shards under ``out``,
    with the ring radius as the metadata column ``theta_e`` (a regression target)."""
    rng = np.random.default_rng(seed)
    yy, xx = (np.mgrid[0:size, 0:size].astype(np.float32) - size / 2) / size
    for k, lo in enumerate(range(0, n, per_shard)):
        m = min(per_shard, n - lo)
        labels = (np.arange(lo, lo + m) % 3).astype(np.int64)
        radius = rng.uniform(0.2, 0.3, (m, 1, 1)).astype(np.float32)
        r = np.sqrt(xx**2 + yy**2)[None]
        images = np.exp(-0.5 * ((r - radius) / 0.04) ** 2)
        images += rng.normal(0, 0.03, images.shape).astype(np.float32)
        ang = rng.uniform(0, 2 * np.pi, (m, 1, 1))
        bx, by = radius * np.cos(ang), radius * np.sin(ang)
        blob = np.exp(-((xx - bx) ** 2 + (yy - by) ** 2) / (2 * (1.5 / size) ** 2))
        images += (labels > 0)[:, None, None] * 2.0 * blob
        write_shard(out / f"shard-{k:05d}.h5",
                    LensData(images[:, None].astype(np.float32), labels,
                             metadata={"theta_e": radius[:, 0, 0].astype(np.float64)}))


def peak_rss(cmd: list[str]) -> tuple[float, float, int]:
    """(peak RSS in MiB, wall seconds, exit code) of a child process."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    stderr = proc.stderr.read() if proc.stderr else b""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        print(stderr.decode()[-2000:], file=sys.stderr)
    return usage.ru_maxrss / 1024.0, seconds, proc.returncode  # ru_maxrss is KiB on Linux


def _row(command: str, mode: str, n: int, args: argparse.Namespace, rss: float,
         seconds: float) -> dict:
    row = {"command": command, "mode": mode, "n_images": n,
           "data_mib": n * args.size**2 * 4 / 2**20, "peak_rss_mib": rss, "seconds": seconds}
    print(f"{command:>8} {mode:>8}  N={n:>6}  data {row['data_mib']:7.1f} MiB  "
          f"peak RSS {rss:8.1f} MiB  {seconds:6.1f} s", flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=2000, help="images in the smaller data set")
    p.add_argument("--factor", type=int, default=4, help="the larger set has factor * n")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=256,
                   help="training batch (256, the batch that scoring uses too)")
    p.add_argument("--cache-mb", type=float, default=32.0)
    p.add_argument("--detector", default="dcae")
    p.add_argument("--config", default='{"latent_dim": 32}', help="detector options (JSON)")
    p.add_argument("--modes", default="streamed,loaded", help="of `darklens train`")
    p.add_argument("--commands", default="train,evaluate,score",
                   help="which commands to measure, of train,evaluate,score,regress,benchmark "
                   "(all but train stream only)")
    p.add_argument("--report", default="",
                   help="benchmark with its HTML report, in these modes of streamed,loaded "
                   "(default: none, --no-report)")
    p.add_argument("--workdir", help="where to write shards and runs (default: a temp dir)")
    p.add_argument("--out", help="JSON results file")
    args = p.parse_args(argv)

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    report_modes = [m.strip() for m in args.report.split(",") if m.strip()]
    if set(report_modes) - {"streamed", "loaded"}:
        raise SystemExit(f"--report: modes are streamed,loaded, not {args.report!r}")
    commands = [c.strip() for c in args.commands.split(",") if c.strip()]
    if "train" not in commands:
        modes = []  # evaluate and score train their own run below
    rows = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        root = Path(tmp)
        sizes = (args.n, args.factor * args.n)
        for n in sizes:
            synthetic_shards(root / f"data-{n}", n, args.size, seed=n)
        for n in sizes:
            data = root / f"data-{n}"
            for mode in modes:
                run = root / f"run-{n}-{mode}"
                train = ["train", "--detector", args.detector, "--data", str(data),
                         "--out", str(run), "--epochs", str(args.epochs), "--seed", "0",
                         "--batch-size", str(args.batch_size), "--config", args.config,
                         "--shard-cache-mb", str(args.cache_mb), "--no-progress"]
                head = [sys.executable, "-m", "darklens.cli"] if mode == "streamed" else \
                    [sys.executable, "-c", LOADED_DRIVER]
                rss, seconds, code = peak_rss(head + train)
                if code != 0:
                    raise SystemExit(f"{mode} run on {n} images failed (exit {code})")
                if "train" in commands:
                    rows.append(_row("train", mode, n, args, rss, seconds))
        cli = [sys.executable, "-m", "darklens.cli"]
        # evaluate and score use a run trained on a third set, so that both sizes are "other
        # data" to it and every image is scored (on its own training data evaluate would score
        # only the held-out part)
        run = root / "run-for-scoring"
        if {"evaluate", "score", "regress"} & set(commands):
            synthetic_shards(root / "data-train", args.n, args.size, seed=0)
            _, _, code = peak_rss(cli + [
                "train", "--detector", args.detector, "--data", str(root / "data-train"),
                "--out", str(run), "--epochs", str(args.epochs), "--seed", "0", "--batch-size",
                str(args.batch_size), "--config", args.config, "--no-progress"])
            if code != 0:
                raise SystemExit(f"training the run for evaluate and score failed (exit {code})")
        reg = root / "regression-run"
        if "regress" in commands:
            _, _, code = peak_rss(cli + [
                "regress", "train", "--target", "theta_e", "--data", str(root / "data-train"),
                "--out", str(reg), "--epochs", str(args.epochs), "--seed", "0"])
            if code != 0:
                raise SystemExit(f"training the regression run failed (exit {code})")
        for command in ("evaluate", "score", "regress", "benchmark"):
            if command not in commands:
                continue
            for n in sizes:
                data = root / f"data-{n}"
                argv = {
                    "evaluate": ["evaluate", str(run), "--data", str(data)],
                    "score": ["score", str(run), str(data), "--csv", str(root / f"s-{n}.csv")],
                    "regress": ["regress", "predict", str(reg), str(data), "--no-tta",
                                "--csv", str(root / f"r-{n}.csv"),
                                "--samples", str(root / f"r-{n}.npy")],
                    "benchmark": ["benchmark", "--data", str(data), "--out",
                                  str(root / f"bench-{n}"), "--detectors", args.detector,
                                  "--config", f'{{"{args.detector}": {args.config}}}',
                                  "--epochs", str(args.epochs), "--shard-cache-mb",
                                  str(args.cache_mb), "--no-report", "--no-progress"],
                }[command]
                if command == "benchmark" and report_modes:
                    for mode in report_modes:  # with the report, in place of --no-report
                        head = cli if mode == "streamed" else \
                            [sys.executable, "-c", REPORT_LOADED_DRIVER]
                        bench = [a for a in argv if a != "--no-report"]
                        bench[bench.index("--out") + 1] = str(root / f"bench-{n}-{mode}")
                        rss, seconds, code = peak_rss(head + bench)
                        if code != 0:
                            raise SystemExit(f"benchmark ({mode} report) on {n} images "
                                             f"failed (exit {code})")
                        rows.append(_row("benchmark+report", mode, n, args, rss, seconds))
                    continue
                rss, seconds, code = peak_rss(cli + argv)
                name = " ".join(argv[:2]) if command == "regress" else command
                if code != 0:
                    raise SystemExit(f"{name} on {n} images failed (exit {code})")
                rows.append(_row(name, "streamed", n, args, rss, seconds))

    growth = {}
    print()
    print(f"| command | mode | peak RSS N={args.n} (MiB) | peak RSS N={args.factor * args.n} "
          "(MiB) | growth (MiB) |")
    print("|---|---|---|---|---|")
    for command, mode in dict.fromkeys((r["command"], r["mode"]) for r in rows):
        small, large = (r for r in rows if r["command"] == command and r["mode"] == mode)
        growth[f"{command} {mode}"] = large["peak_rss_mib"] - small["peak_rss_mib"]
        print(f"| {command} | {mode} | {small['peak_rss_mib']:.0f} | "
              f"{large['peak_rss_mib']:.0f} | {growth[f'{command} {mode}']:+.0f} |")
    data_growth = (args.factor - 1) * args.n * args.size**2 * 4 / 2**20
    print(f"\nimages grew by {data_growth:.0f} MiB; streamed training cache {args.cache_mb:g} "
          "MiB")
    result = {
        **header("memory", args),
        "rows": rows, "growth_mib": growth, "data_growth_mib": data_growth,
        "note": "peak RSS (ru_maxrss) of each child process; the machine is "
                "shared with other jobs, so timings are noisy (memory much less so)",
    }
    finish(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
