"""`darklens evaluate RUN --data DIR`: AUROC, AUPRC and TPR at 1% FPR on held-out images.

DIR is read twice, a batch at a time, never whole (memory stays flat with the number of
images): once for its labels and the data fingerprint, once to score the chosen images.

Which images: if DIR holds the very data the run was trained on (same fingerprint), the test
part of the run's split (normal images never trained on or validated on, plus the test share
of the anomalies, all from the seed recorded in the run); otherwise every labelled image in
DIR (a separate test set). Writes RUN/metrics.json and RUN/test_scores.csv atomically.

Images whose score is NaN (a detector that could not fit them: residual-chi2) are never ranked:
they are left out of the metrics and of test_scores.csv, recorded in metrics.json under
``not_scored`` (``n``, the first 50 data ``images`` indices and, for data with one file per
image, their ``files``) and named in one warning line on stderr.

A run trained with ``--input residual`` scores the residual maps of the smooth-lens fit: the
evaluated images (only those) are fitted with the run's recorded transform
(:mod:`darklens.fit.residual_input`) before its normaliser; an image the fit could not take
is not scored, as above.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from darklens.data.fingerprint import fingerprint
from darklens.data.stream import ImageBatch, scan_images, stream_images
from darklens.errors import DataError
from darklens.evaluate.metrics import anomaly_metrics
from darklens.io import write_json_atomic, write_text_atomic
from darklens.models.scoring import RunScorer, score_all_images
from darklens.progress import progress_bar
from darklens.train.data import detection_split

MAX_RECORDED = 50  # not-scored images listed in metrics.json
MAX_NAMED = 10  # ... and in the warning


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate a trained detector on labelled images")
    p.add_argument("run", help="run directory written by `darklens train`")
    p.add_argument("--data", required=True, help="labelled data set")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def evaluation_indices(config: dict, data, fp: str | None = None) -> tuple[np.ndarray, str]:
    """Indices to evaluate on and a sentence saying which they are. ``data`` needs only
    ``labels`` and ``class_names``; ``fp``: its fingerprint (computed from ``data`` if None)."""
    labelled = np.flatnonzero(data.labels >= 0)
    trained = config.get("data", {})
    if fp is None and trained.get("fingerprint"):
        fp = fingerprint(data)
    if trained.get("fingerprint") and trained["fingerprint"] == fp:
        sp = config["split"]
        split = detection_split(data, config.get("normal", "no_sub"), sp["seed"],
                                sp["val_fraction"], sp["test_fraction"])
        return split.test, "held-out test part of the training data (split seed " \
                           f"{sp['seed']})"
    return labelled, "every labelled image (a data set other than the training data)"


def run(args: argparse.Namespace) -> int:
    scorer = RunScorer.load(args.run)
    config, transform, shape = scorer.config, scorer.transform, scorer.image_shape
    # pass 1 (images read, not kept): labels, names and the fingerprint that says whether
    # these are the training data
    found = scan_images(args.data, args.batch_size, shape)
    data = SimpleNamespace(labels=found.labels, class_names=found.class_names)
    if not len(found.labels):
        raise DataError(f"{args.data}: no images")
    idx, which = evaluation_indices(config, data, found.fingerprint)
    # pass 2: score the chosen images a batch at a time
    wanted = np.zeros(len(found.labels), dtype=bool)
    wanted[idx] = True
    parts: list[np.ndarray] = []
    every_parts: list[dict[str, np.ndarray]] = []
    pos = 0
    with progress_bar(total=len(idx), desc="evaluating", unit="images") as bar:
        for batch in stream_images(args.data, args.batch_size, shape, on_bad="stop"):
            assert isinstance(batch, ImageBatch)
            keep = wanted[pos:pos + len(batch.names)]
            pos += len(batch.names)
            if not keep.any():
                continue
            x, fitted = scorer.inputs(batch.images if keep.all() else batch.images[keep])
            parts.append(scorer.score_inputs(x, fitted, args.batch_size, args.device))
            every = score_all_images(scorer.detector, x, args.batch_size, args.device)
            if every:
                every_parts.append(every)
            bar.update(int(keep.sum()))
    scores = np.concatenate(parts) if parts else np.zeros(0)
    bad = np.isnan(scores)
    not_scored = not_scored_record(idx[bad], found.names) if bad.any() else None
    if bad.any():
        named = [f"{int(i)} ({_class(data, int(i))})" for i in idx[bad]]
        why = "the smooth-lens fit of the residual input failed" if transform is not None \
            else f"{config['detector']} could not fit them"
        print(f"darklens evaluate: warning: {int(bad.sum())} image(s) not scored "
              f"({why}), left out of the metrics: "
              f"{_listing(named)}", file=sys.stderr)
        idx, scores = idx[~bad], scores[~bad]
        if not len(idx):
            raise DataError(f"{args.data}: cannot evaluate: no image could be scored")
    labels = data.labels[idx]
    normal = config.get("normal", "no_sub")
    try:
        metrics = anomaly_metrics(scores, labels, data.class_names, normal)
    except ValueError as err:
        raise DataError(f"{args.data}: cannot evaluate: {err}") from err
    metrics["test_set"] = {"data": str(Path(args.data).resolve()), "images": which,
                           "n": int(len(idx))}
    every = _every_score(every_parts, ~bad, labels, data.class_names, normal)
    if every:
        metrics["every_score"] = every
    if not_scored is not None:
        metrics["not_scored"] = not_scored
    run_dir = Path(args.run)
    write_json_atomic(run_dir / "metrics.json", metrics)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["index", "class", "score"])
    for i, lab, s in zip(idx, labels, scores, strict=True):
        w.writerow([int(i), data.class_names[lab], repr(float(s))])
    write_text_atomic(run_dir / "test_scores.csv", buf.getvalue())
    au = metrics["auroc"]
    print(f"{config['detector']} on {which}: " + ", ".join(
        f"AUROC {k} {v:.3f}" for k, v in au.items()))
    if every:  # R(z) ("norm"), the proposal's own score, beside kNN and the rest
        print("every score, AUROC all: " + ", ".join(
            f"{k} {v['all']:.3f}" for k, v in every.items() if v is not None))
    print(json.dumps({"n": metrics["n"]}))
    print(f"wrote {run_dir / 'metrics.json'}")
    return 0


def _every_score(parts: list[dict[str, np.ndarray]], keep: np.ndarray, labels: np.ndarray,
                 class_names, normal: str) -> dict | None:
    """AUROC of every score of a detector that has several (metrics.json ``every_score``),
    from the per-batch ``score_all`` results ``parts``."""
    if not parts:
        return None
    out = {}
    for name in parts[0]:
        s = np.concatenate([p[name] for p in parts])[keep]
        out[name] = (anomaly_metrics(s, labels, class_names, normal)["auroc"]
                     if np.isfinite(s).all() else None)
    return out


def not_scored_record(where: np.ndarray, names: list[str] | None = None) -> dict:
    """metrics.json's record of the images (data indices ``where``) whose score is NaN (a
    detector that could not fit them, e.g. residual-chi2): their number, the first
    ``MAX_RECORDED`` indices and, where the data set has one file per image, their files."""
    first = [int(i) for i in where[:MAX_RECORDED]]
    record: dict = {"n": int(len(where)), "images": first}
    if names is not None and all(not n.endswith("]") for n in names[:1]):
        record["files"] = [str(names[i]) for i in first]
    return record


def _class(data, i: int) -> str:
    lab = int(data.labels[i])
    return data.class_names[lab] if lab >= 0 else "unlabelled"


def _listing(items: list[str], limit: int = MAX_NAMED) -> str:
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more
