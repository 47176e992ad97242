"""`darklens score RUN FILE_OR_DIR...`: one anomaly score per image (higher = more anomalous).

Inputs are anything ``load_dataset`` reads: single ``.npy`` images, folders of them, DeepLense
class folders, HDF5 shards. Images are normalised as in training. Prints
``source,class,score,flag`` lines, or writes them to ``--csv``. ``flag`` is ``ok``, or
``not_fitted`` for an image the detector could not score (residual-chi2: the smooth-lens fit
failed): its score is left empty, never ranked, and a warning on stderr names such images.

A run trained with ``--input residual`` scores the residual maps of the smooth-lens fit: every
image is fitted with the run's recorded transform (:mod:`darklens.fit.residual_input`) before
its normaliser; an image the fit could not take is flagged ``not_fitted`` as above.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys

import numpy as np

from darklens.data.dataset import Normaliser
from darklens.data.formats import image_names, load_dataset
from darklens.errors import DataError
from darklens.fit.residual_input import load_for_run
from darklens.io import write_text_atomic
from darklens.models.persistence import load_run, read_run_config
from darklens.models.scoring import score_images

NOT_FITTED = "not_fitted"  # the flag of an image with a NaN score (the detector could not fit it)
MAX_NAMED = 10  # not-scored images named in the warning


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="score images with a trained detector")
    p.add_argument("run", help="run directory written by `darklens train`")
    p.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR")
    p.add_argument("--csv", help="write the scores to this CSV file instead of printing them")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = read_run_config(args.run)
    detector = load_run(args.run)
    transform = load_for_run(args.run, config)  # None: the run learned on raw images
    normaliser = Normaliser.from_dict(config.get("normaliser", {"mode": "none"}))
    want = (detector.config.get("in_channels", 1),) + (detector.config.get("image_size"),) * 2
    rows, not_scored = [], []
    for path in args.inputs:
        data = load_dataset(path)
        if None not in want and tuple(data.images.shape[1:]) != want:
            raise DataError(f"{path}: images are {tuple(data.images.shape[1:])}, the run was "
                            f"trained on {want}")
        images = data.images
        if transform is not None:
            images = transform(images, progress=sys.stderr.isatty())
        scores = score_images(detector, normaliser(images), args.batch_size, args.device)
        if transform is not None:
            scores[~transform.fitted] = np.nan
        for name, label, s in zip(image_names(data, path), data.labels, scores, strict=True):
            cls = data.class_names[label] if label >= 0 else ""
            if np.isnan(s):
                rows.append([name, cls, "", NOT_FITTED])
                not_scored.append(name)
            else:
                rows.append([name, cls, repr(float(s)), "ok"])
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["source", "class", "score", "flag"])
    w.writerows(rows)
    if not_scored:
        more = f" (+{len(not_scored) - MAX_NAMED} more)" if len(not_scored) > MAX_NAMED else ""
        why = "the smooth-lens fit of the residual input failed" if transform is not None \
            else f"{detector.name} could not fit them"
        print(f"darklens score: warning: {len(not_scored)} image(s) not scored "
              f"({why}; empty score, flag {NOT_FITTED}): "
              f"{', '.join(not_scored[:MAX_NAMED])}{more}", file=sys.stderr)
    if args.csv:
        write_text_atomic(args.csv, buf.getvalue())
        print(f"wrote {len(rows)} score(s) to {args.csv}")
    else:
        sys.stdout.write(buf.getvalue())
    return 0
