"""The report's sections that read images, and the lazy data access they share.

``report_data`` opens the benchmark's data as the report needs them (HDF5 shards lazily: labels,
class names and the ``substructure_chi2`` column up front, images on demand), so that the
report's memory does not grow with the images; the sections (representation maps, where-maps,
detectability curves) read only the images they show. ``report/html.py`` assembles the page.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

import numpy as np

from darklens.benchmark import read_test_scores
from darklens.data.dataset import Normaliser
from darklens.data.formats import load_dataset
from darklens.data.lensdata import LensData
from darklens.data.shards import ShardDataset, is_shard_path
from darklens.evaluate.detectability import detectability, quantile_edges
from darklens.report import figures
from darklens.report.html_parts import img as _img
from darklens.report.html_parts import note as _note
from darklens.report.html_parts import num as _num
from darklens.report.html_parts import table as _table

REPORT_CACHE_MB = 16.0  # the report reads few images, each figure's in index order


def report_data(path: str | os.PathLike, cache_mb: float = REPORT_CACHE_MB
                ) -> LensData | ShardDataset:
    """The benchmark's data as the report needs it: HDF5 shards opened lazily (labels and the
    ``substructure_chi2`` column read, images read on demand through ``cache_mb`` MiB, no pass
    over every image), so memory does not grow with the images; other formats loaded whole."""
    if not is_shard_path(path):
        return load_dataset(path)
    data = ShardDataset.from_path(path, cache_mb, check=False)
    chi2 = data.metadata_column("substructure_chi2")
    if chi2 is not None:
        data.metadata["substructure_chi2"] = chi2
    return data


def captions(data: LensData | ShardDataset, idx: np.ndarray,
              scores: np.ndarray | None = None) -> list[str]:
    chi2 = data.metadata.get("substructure_chi2")
    out = []
    for k, i in enumerate(idx):
        name = data.class_names[int(data.labels[i])]
        parts = [name]
        if chi2 is not None and name != "no_sub" and np.isfinite(chi2[i]):
            parts.append(f"χ² {chi2[i]:.0f}")
        if scores is not None:
            parts.append(f"s {scores[k]:.3g}")
        out.append(", ".join(parts))
    return out


def representation(first_seed: dict[str, tuple[int, Path]], data: LensData | ShardDataset,
                    scores: dict[str, tuple[np.ndarray, np.ndarray]], max_embed: int) -> str:
    """Each detector's representation of its test images, mapped to 2-D. More than
    ``max_embed`` test images: a random subset of ``max_embed`` (seed 0), the only images
    read, which the note says; so memory and time do not grow with the data."""
    from darklens.models.persistence import load_run, read_run_config
    from darklens.report.representation import embed, map_2d

    maps: dict[str, tuple[np.ndarray, np.ndarray, str]] = {}
    notes = []
    capped = []
    for det, (_, run_dir) in first_seed.items():
        idx = scores[det][0]
        if idx.size > max_embed:
            capped.append(idx.size)
            idx = np.sort(np.random.default_rng(0).choice(idx, max_embed, replace=False))
        try:
            detector = load_run(run_dir)
        except Exception as err:  # a report should still be written
            notes.append(f"{det}: cannot load the run ({err})")
            continue
        norm = Normaliser.from_dict(read_run_config(run_dir).get("normaliser", {"mode": "none"}))
        got = embed(detector, norm(data.images[idx]))
        if got is None:
            notes.append(f"{det}: no learned representation to show (skipped)")
            continue
        feats, where = got
        pts, method = map_2d(feats)
        maps[det] = (pts, data.labels[idx], method)
        notes.append(f"{det}: {where}, {feats.shape[1]} dimensions")
    body = _note("Test images (up to "
                 f"{max_embed}) in each detector's feature space, projected to 2-D, coloured by "
                 "class. Features: " + "; ".join(notes) + ".")
    if capped:
        body += _note(f"Of the {max(capped)} test images, a random subset of {max_embed} "
                      "(seed 0) is shown: the maps cover a sample, not every test image.")
    if maps:
        body += _img(figures.embedding_figure(maps, data.class_names), "representation maps")
    return body


def where_maps(first_seed: dict[str, tuple[int, Path]], data: LensData | ShardDataset,
                scores: dict[str, tuple[np.ndarray, np.ndarray]], k: int = 6) -> str:
    """Each detector's where-map overlays of its ``k`` highest-scoring test images."""
    from darklens.report.gallery import where_map_panels

    body = _note("What makes each image anomalous, in colour over the image (cyan cross: the "
                 "map's peak): an autoencoder's reconstruction error, the smooth-lens fit's "
                 "residual, or for detectors without a map of their own the occlusion "
                 "saliency of their score (darklens.evaluate.where_maps).")
    for det, (_, run_dir) in first_seed.items():
        idx, s = scores[det]
        top = np.argsort(s)[::-1][:k]
        fig, what = where_map_panels(run_dir, data.images[idx[top]],
                                     captions(data, idx[top], s[top]))
        body += f"<h3>{html.escape(det)}</h3>" + _note(what)
        if fig is not None:
            body += _img(fig, f"{det} where-maps")
    return body


def detectability_section(runs: dict[str, list[tuple[int, Path]]], data: LensData | ShardDataset,
                   normal: str, anomalies: list[str]) -> str:
    chi2 = data.metadata.get("substructure_chi2")
    if chi2 is None or not np.isfinite(np.asarray(chi2, dtype=float)).any():
        return _note("The data carry no substructure_chi2 metadata (it comes with the "
                     "built-in simulator): no detectability curve.")
    chi2 = np.asarray(chi2, dtype=np.float64)
    names = list(data.class_names)
    edges = {c: quantile_edges(chi2[data.labels == names.index(c)], 5) for c in anomalies}
    curves: dict[str, dict[str, list[list[dict[str, float]]]]] = {}
    rows = []
    for det, seed_runs in runs.items():
        curves[det] = {c: [] for c in anomalies}
        for _, run_dir in seed_runs:
            idx, s = read_test_scores(run_dir)
            got = detectability(s, data.labels[idx], chi2[idx], names, normal, edges)
            for c, bins in got.items():
                curves[det][c].append(bins)
        for c in anomalies:
            au = np.array([[b["auroc"] for b in seed] for seed in curves[det][c]], dtype=float)
            if au.size:
                rows.append([det, c] + [_num(float(np.nanmean(au[:, k])), 3)
                                        if np.isfinite(au[:, k]).any() else "-"
                                        for k in range(au.shape[1])])
    nbins = max((len(e) - 1 for e in edges.values()), default=0)
    header = ["detector", "class"] + [f"bin {k + 1}" for k in range(nbins)]
    bins_text = "; ".join(f"{c}: " + ", ".join(f"{e[k]:.3g}–{e[k + 1]:.3g}"
                                                 for k in range(len(e) - 1))
                          for c, e in edges.items())
    return (_note("substructure_chi2 is the χ² between each image with and without its "
                  "substructure, in units of the noise. Anomalies of each class are cut into "
                  "quantile bins of it (edges over the whole data set, shared by every seed); "
                  "each bin's test images are scored against every normal test image. Lines: "
                  "mean over seeds (shaded: min–max). Bins: " + bins_text + ".")
            + _img(figures.detectability_figure(curves, anomalies), "detectability")
            + _table(header, rows))
