"""`darklens score RUN FILE_OR_DIR...`: anomaly scores, p-values and decisions for new images.

Inputs are anything ``load_dataset`` reads: single ``.npy`` images, folders of them, DeepLense
class folders, HDF5 shards. Images are normalised as in training. Prints CSV lines, or writes
them to ``--csv``, with the columns

- ``source``, ``class``: the image (its file, or ``PATH[i]``) and its class folder, if any;
- ``score``: the detector's anomaly score (higher = more anomalous);
- ``p_value``: the split-conformal p-value of the score against the run's held-out
  calibration normals (``calibration.json``, :mod:`darklens.evaluate.conformal`): the chance
  that a normal image scores at least as high;
- ``anomalous``: 1 if ``p_value <= --fpr`` (default 0.01), else 0: flagging so holds the
  false-positive rate at ``--fpr`` for normal images;
- with ``--fdr Q``: ``q_value`` (Benjamini-Hochberg adjusted p-value over every image scored in
  this call) and ``discovery`` (1 if ``q_value <= Q``): the expected share of normal images
  among the discoveries is at most Q;
- ``flag``: ``ok``, or ``not_fitted`` for an image the detector could not score
  (residual-chi2: the smooth-lens fit failed): its score, p-value and decisions are left
  empty, never ranked, and a warning on stderr names such images.

A run saved without calibration scores (trained before they existed, or by ``darklens
benchmark``) gets empty ``p_value`` and ``anomalous`` cells and one warning; ``--fdr`` then
stops with an error.

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
from darklens.errors import DarklensError, DataError
from darklens.evaluate.conformal import (
    benjamini_hochberg,
    check_rate,
    conformal_p_values,
    flags_at_fpr,
)
from darklens.fit.residual_input import load_for_run
from darklens.io import write_text_atomic
from darklens.models.persistence import load_run, read_calibration, read_run_config
from darklens.models.scoring import score_images
from darklens.progress import is_terminal

NOT_FITTED = "not_fitted"  # the flag of an image with a NaN score (the detector could not fit it)
MAX_NAMED = 10  # not-scored images named in the warning


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="score images with a trained detector")
    p.add_argument("run", help="run directory written by `darklens train`")
    p.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR")
    p.add_argument("--csv", help="write the scores to this CSV file instead of printing them")
    p.add_argument("--fpr", type=float, default=0.01,
                   help="false-positive rate of the anomalous column: flag p_value <= FPR "
                   "(default 0.01)")
    p.add_argument("--fdr", type=float,
                   help="also control the false discovery rate over all images at this level "
                   "(Benjamini-Hochberg): q_value and discovery columns")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for rate, name in ((args.fpr, "--fpr"), (args.fdr, "--fdr")):
        if rate is not None:
            try:
                check_rate(rate, name)
            except ValueError as err:
                raise DarklensError(str(err)) from None
    config = read_run_config(args.run)
    calibration = read_calibration(args.run)
    if calibration is not None and calibration.size == 0:
        raise DarklensError(f"{args.run}: calibration.json holds no scores")
    if calibration is None and args.fdr is not None:
        raise DarklensError(f"{args.run}: --fdr needs the run's calibration scores "
                            "(calibration.json); retrain the run with `darklens train`")
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
            images = transform(images, progress=is_terminal())
        scores = score_images(detector, normaliser(images), args.batch_size, args.device)
        if transform is not None:
            scores[~transform.fitted] = np.nan
        for name, label, s in zip(image_names(data, path), data.labels, scores, strict=True):
            cls = data.class_names[label] if label >= 0 else ""
            rows.append((name, cls, float(s)))
            if np.isnan(s):
                not_scored.append(name)
    table = decision_table(rows, calibration, args.fpr, args.fdr)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerows(table)
    if calibration is None:
        print(f"darklens score: warning: {args.run} has no calibration scores "
              "(calibration.json), so no p-values and no anomalous flags; retrain the run "
              "with `darklens train` to get them", file=sys.stderr)
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


def decision_table(rows: list[tuple[str, str, float]], calibration: np.ndarray | None,
                   fpr: float, fdr: float | None) -> list[list[str]]:
    """The CSV rows (header first) of (source, class, score) rows: p-values, flags, BH."""
    scores = np.array([r[2] for r in rows], dtype=np.float64)
    header = ["source", "class", "score", "p_value", "anomalous"]
    if fdr is not None:
        header += ["q_value", "discovery"]
    header.append("flag")
    if calibration is None:
        p = np.full(len(rows), np.nan)
    else:
        p = conformal_p_values(scores, calibration)
    flags = flags_at_fpr(p, fpr)
    q, found = benjamini_hochberg(p, fdr) if fdr is not None else (None, None)
    out = [header]
    for i, (name, cls, s) in enumerate(rows):
        ok = not np.isnan(s)
        has_p = ok and not np.isnan(p[i])
        line = [name, cls, repr(s) if ok else "", repr(float(p[i])) if has_p else "",
                str(int(flags[i])) if has_p else ""]
        if q is not None:
            line += [repr(float(q[i])) if has_p else "", str(int(found[i])) if has_p else ""]
        line.append("ok" if ok else NOT_FITTED)
        out.append(line)
    return out
