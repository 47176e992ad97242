"""`darklens regress predict RUN FILES...`: per-image posteriors of a regression run, as CSV.

Inputs are anything ``load_dataset`` reads (``.npy`` images, folders of them, DeepLense class
folders, HDF5 shards), read ``--batch-size`` images at a time
(``darklens.models.regression_persistence.stream_posteriors``): every row is written as its
batch is predicted, the draws of ``--samples`` too, so memory does not grow with the number
of images. The numbers are those of predicting the loaded data (same batches, one seeded
generator per input). Columns: ``file`` (the image's file; for shards the input path) and
``index`` (the image's position in that input), then per target its posterior ``mean``,
``sigma`` and the quantiles of ``QUANTILES``.

A bad file (or shard image) stops the run with one line naming it (exit 2, nothing written;
``--on-bad-file stop``, the default), or with ``--on-bad-file skip`` is named on stderr and
written as a row with its name and empty values (NaN draws in ``--samples``), as
``darklens score`` does.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import shutil
import sys
import tempfile
from collections.abc import Iterator
from typing import IO

import numpy as np

from darklens.data.shards import is_shard_path
from darklens.data.stream import ON_BAD, BadInput, count_images
from darklens.errors import DarklensError, DataError
from darklens.io import atomic_path, npy_rows
from darklens.models.regression_persistence import load_regression_run, stream_posteriors
from darklens.models.regressor import draws_per_image
from darklens.progress import progress_bar

QUANTILES = (0.025, 0.16, 0.5, 0.84, 0.975)
MAX_NAMED = 10  # skipped files named in the warning


def register(rsub: argparse._SubParsersAction) -> None:
    """The ``predict`` sub-command of ``darklens regress``."""
    q = rsub.add_parser("predict", help="predict targets (mean, sigma) for images")
    q.add_argument("run", help="run directory")
    q.add_argument("files", nargs="+", help=".npy images, HDF5 shards or data folders")
    q.add_argument("--csv", help="write CSV here instead of printing it")
    q.add_argument("--samples", help="also write the posterior draws here (.npy: images x "
                                     "draws x targets, in the order of the CSV rows)")
    q.add_argument("--n-samples", type=int, default=256, help="posterior draws per image")
    q.add_argument("--seed", type=int, default=0, help="seed of the posterior draws")
    q.add_argument("--no-tta", action="store_true")
    q.add_argument("--no-recalibration", action="store_true",
                   help="the raw posteriors, even where the run has a recalibration")
    q.add_argument("--on-bad-file", choices=ON_BAD, default="stop",
                   help="a bad image file in the inputs: 'stop' the run with one line (exit 2, "
                   "nothing written; default) or 'skip' it (named on stderr, a row with empty "
                   "values)")
    q.add_argument("--batch-size", type=int, default=256,
                   help="images read and predicted at a time (memory stays bounded; the "
                   "draws depend on it)")
    q.add_argument("--device", default="cpu")
    q.set_defaults(func=run_predict)


@contextlib.contextmanager
def _text_out(path: str | None) -> Iterator[IO[str]]:
    """A text file that rows are written to as they come: ``path`` (atomically), or a temp
    file printed to stdout when the block succeeds; nothing is written if it fails."""
    if path:
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
            yield fh
        return
    with tempfile.TemporaryFile("w+", newline="") as fh:
        yield fh
        fh.seek(0)
        shutil.copyfileobj(fh, sys.stdout)


def run_predict(args: argparse.Namespace) -> int:
    """Per image and target: mean, sigma and the quantiles of ``QUANTILES`` of its posterior
    (from ``--n-samples`` seeded draws); ``--samples FILE.npy`` also saves the draws."""
    if args.batch_size < 1:
        raise DarklensError("--batch-size must be at least 1")
    run = load_regression_run(args.run)
    targets = run.targets
    qnames = [f"q{100 * q:g}".replace(".", "_") for q in QUANTILES]
    cols = ["file", "index"] + [f"{t}_{s}" for t in targets for s in ("mean", "sigma", *qnames)]
    n_draws = draws_per_image(len(run.models), not args.no_tta, args.n_samples)
    total = sum(count_images(f) for f in args.files)  # also checks every path first
    skipped: list[BadInput] = []
    n_rows = 0
    with contextlib.ExitStack() as stack:
        w = csv.writer(stack.enter_context(_text_out(args.csv)), lineterminator="\n")
        draws = stack.enter_context(npy_rows(args.samples, (n_draws, len(targets)))) \
            if args.samples else None
        bar = stack.enter_context(progress_bar(total=total, desc="predicting", unit="images"))
        w.writerow(cols)
        for f in args.files:
            per_file = not is_shard_path(f)  # one file per image: name it, else the input
            index = 0
            for item in stream_posteriors(run, f, not args.no_tta, args.n_samples, args.seed,
                                          args.batch_size, args.device, args.on_bad_file,
                                          recalibrate=not args.no_recalibration):
                if isinstance(item, BadInput):
                    skipped.append(item)
                    w.writerow([item.name, index] + [""] * (len(cols) - 2))
                    if draws is not None:
                        draws.append(np.full((1, n_draws, len(targets)), np.nan))
                    index += 1
                    n_rows += 1
                    bar.update(1)
                    continue
                batch, pred = item
                quant = np.quantile(pred.samples, QUANTILES, axis=1)  # (Q, B, T)
                sigma = pred.var ** 0.5
                for k, name in enumerate(batch.names):
                    w.writerow([name if per_file else f, index + k] + [
                        float(v) for j in range(len(targets))
                        for v in (pred.mean[k, j], sigma[k, j], *quant[:, k, j])])
                if draws is not None:
                    draws.append(pred.samples)
                index += len(batch.names)
                n_rows += len(batch.names)
                bar.update(len(batch.names))
        if n_rows == len(skipped):
            raise DataError("no images to predict" if not skipped
                            else "nothing to predict: every input was bad")
    if skipped:
        listed = [f"{b.name} ({b.reason})" for b in skipped]
        more = f" (+{len(listed) - MAX_NAMED} more)" if len(listed) > MAX_NAMED else ""
        print(f"darklens regress predict: warning: skipped {len(skipped)} bad file(s) "
              f"(--on-bad-file skip; empty values): {', '.join(listed[:MAX_NAMED])}{more}",
              file=sys.stderr)
    if args.samples:
        print(f"wrote draws {(n_rows, n_draws, len(targets))} (images, draws, targets "
              f"{', '.join(targets)}) to {args.samples}", file=sys.stderr)
    if args.csv:
        print(f"wrote {n_rows} predictions to {args.csv}", file=sys.stderr)
    return 0
