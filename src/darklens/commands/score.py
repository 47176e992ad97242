"""`darklens score RUN FILE_OR_DIR...`: anomaly scores, p-values and decisions for new images.

Inputs are anything ``load_dataset`` reads: single ``.npy`` images, folders of them, DeepLense
class folders, HDF5 shards, read ``--batch-size`` images at a time (:mod:`darklens.data.stream`:
memory does not grow with the folder). A bad file stops the run with one line naming it (exit
2, nothing written; ``--on-bad-file stop``, the default) or is named on stderr and listed with
flag ``skipped`` (``--on-bad-file skip``). Images are normalised as in training. Prints CSV
lines, or writes them (atomically) to ``--csv``, with the columns

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
- with ``--maps DIR``: ``map``, the file in DIR holding the image's where-map overlay (PNG:
  the image in grey, what makes it anomalous in colour, a cross at the map's peak; see
  :mod:`darklens.evaluate.where_maps`);
- ``flag``: ``ok``, ``skipped`` (a bad file under ``--on-bad-file skip``), or
  ``not_fitted`` for an image the detector could not score (residual-chi2: the smooth-lens
  fit failed): its score, p-value and decisions are left
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
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from darklens.data.stream import ON_BAD, BadInput, ImageBatch, count_images, stream_images
from darklens.errors import DarklensError, DataError
from darklens.evaluate.conformal import (
    benjamini_hochberg,
    check_rate,
    conformal_p_values,
    flags_at_fpr,
)
from darklens.evaluate.where_maps import where_maps
from darklens.io import write_text_atomic
from darklens.models.persistence import read_calibration
from darklens.models.scoring import RunScorer
from darklens.progress import progress_bar
from darklens.report.gallery import save_overlay

NOT_FITTED = "not_fitted"  # the flag of an image with a NaN score (the detector could not fit it)
SKIPPED = "skipped"  # the flag of a bad file skipped under --on-bad-file skip
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
    p.add_argument("--maps", metavar="DIR",
                   help="also write a where-map overlay (PNG) of every scored image into DIR: "
                   "what makes the image anomalous, and a map column in the CSV")
    p.add_argument("--on-bad-file", choices=ON_BAD, default="stop",
                   help="a bad image file in the inputs: 'stop' the run with one line (exit 2, "
                   "nothing written; default) or 'skip' it (named on stderr, flag skipped)")
    p.add_argument("--batch-size", type=int, default=256,
                   help="images read and scored at a time (memory stays bounded)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for rate, name in ((args.fpr, "--fpr"), (args.fdr, "--fdr")):
        if rate is not None:
            try:
                check_rate(rate, name)
            except ValueError as err:
                raise DarklensError(str(err)) from None
    scorer = RunScorer.load(args.run)
    detector, transform, shape = scorer.detector, scorer.transform, scorer.image_shape
    calibration = read_calibration(args.run)
    if calibration is not None and calibration.size == 0:
        raise DarklensError(f"{args.run}: calibration.json holds no scores")
    if calibration is None and args.fdr is not None:
        raise DarklensError(f"{args.run}: --fdr needs the run's calibration scores "
                            "(calibration.json); retrain the run with `darklens train`")
    rows: list[tuple[str, str, float | str]] = []
    map_files: list[str] | None = [] if args.maps else None
    maps_dir = Path(args.maps) if args.maps else None
    if maps_dir is not None:
        maps_dir.mkdir(parents=True, exist_ok=True)
    not_scored: list[str] = []
    skipped: list[BadInput] = []
    total = sum(count_images(path) for path in args.inputs)  # also checks every path first
    with progress_bar(total=total, desc="scoring", unit="images") as bar:
        for path in args.inputs:
            for item in stream_images(path, args.batch_size, shape, args.on_bad_file):
                if isinstance(item, BadInput):
                    skipped.append(item)
                    rows.append((item.name, "", SKIPPED))
                    if map_files is not None:
                        map_files.append("")
                    bar.update(1)
                    continue
                x, fitted = scorer.inputs(item.images)
                scores = scorer.score_inputs(x, fitted, args.batch_size, args.device)
                if maps_dir is not None and map_files is not None:
                    map_files += _write_maps(maps_dir, len(rows), item, x, detector, scores,
                                             args.device)
                for name, label, sc in zip(item.names, item.labels, scores, strict=True):
                    rows.append((name, item.class_names[label] if label >= 0 else "",
                                 float(sc)))
                    if np.isnan(sc):
                        not_scored.append(name)
                bar.update(len(item.names))
    if skipped:
        listed = [f"{b.name} ({b.reason})" for b in skipped]
        print(f"darklens score: warning: skipped {len(skipped)} bad file(s) "
              f"(--on-bad-file skip; flag {SKIPPED}): {_listing(listed)}", file=sys.stderr)
    if len(skipped) == len(rows):
        raise DataError("nothing to score: every input was bad")
    table = decision_table(rows, calibration, args.fpr, args.fdr, map_files)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerows(table)
    if calibration is None:
        print(f"darklens score: warning: {args.run} has no calibration scores "
              "(calibration.json), so no p-values and no anomalous flags; retrain the run "
              "with `darklens train` to get them", file=sys.stderr)
    if not_scored:
        why = "the smooth-lens fit of the residual input failed" if transform is not None \
            else f"{detector.name} could not fit them"
        print(f"darklens score: warning: {len(not_scored)} image(s) not scored "
              f"({why}; empty score, flag {NOT_FITTED}): {_listing(not_scored)}",
              file=sys.stderr)
    if args.csv:
        write_text_atomic(args.csv, buf.getvalue())
        print(f"wrote {len(rows) - len(skipped)} score(s) to {args.csv}"
              + (f" and their where-maps to {maps_dir}" if maps_dir is not None else ""))
    else:
        sys.stdout.write(buf.getvalue())
    return 0


def _write_maps(out: Path, first: int, item: ImageBatch, images: np.ndarray, detector: Any,
                scores: np.ndarray, device: str) -> list[str]:
    """Where-map overlays (PNG) of a batch into ``out``; their file names ('' if not scored)."""
    maps = where_maps(detector, images, device=device)
    names = []
    for k, (name, s) in enumerate(zip(item.names, scores, strict=True)):
        if np.isnan(s):
            names.append("")
            continue
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(name.split("[")[0]).stem)
        index = f"-{name.rsplit('[', 1)[1].rstrip(']')}" if name.endswith("]") else ""
        file = f"{first + k:06d}-{stem}{index}.png"
        save_overlay(out / file, item.images[k, 0], maps[k])
        names.append(file)
    return names


def _listing(items: list[str], limit: int = MAX_NAMED) -> str:
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def decision_table(rows: list[tuple[str, str, float | str]], calibration: np.ndarray | None,
                   fpr: float, fdr: float | None, maps: list[str] | None = None
                   ) -> list[list[str]]:
    """The CSV rows (header first) of (source, class, score) rows: p-values, flags, BH.

    A score that is a string is the flag of a row without a score (a skipped bad file)."""
    scores = np.array([r[2] if not isinstance(r[2], str) else np.nan for r in rows],
                      dtype=np.float64)
    header = ["source", "class", "score", "p_value", "anomalous"]
    if fdr is not None:
        header += ["q_value", "discovery"]
    if maps is not None:
        header.append("map")
    header.append("flag")
    if calibration is None:
        p = np.full(len(rows), np.nan)
    else:
        p = conformal_p_values(scores, calibration)
    flags = flags_at_fpr(p, fpr)
    q, found = benjamini_hochberg(p, fdr) if fdr is not None else (None, None)
    out = [header]
    for i, (name, cls, s) in enumerate(rows):
        if isinstance(s, str):  # a skipped bad file
            out.append([name, cls] + [""] * (len(header) - 3) + [s])
            continue
        where = [maps[i]] if maps is not None else []
        ok = not np.isnan(s)
        has_p = ok and not np.isnan(p[i])
        line = [name, cls, repr(s) if ok else "", repr(float(p[i])) if has_p else "",
                str(int(flags[i])) if has_p else ""]
        if q is not None:
            line += [repr(float(q[i])) if has_p else "", str(int(found[i])) if has_p else ""]
        line += where
        line.append("ok" if ok else NOT_FITTED)
        out.append(line)
    return out
