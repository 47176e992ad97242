"""Identifiability: how much each lens's posterior narrows the training prior, by true value.

For each target, in bins of its true value: the mean posterior standard deviation, the mean
width of the central 68% interval and the *contraction* 1 - var(posterior) / var(prior)
(Schad et al. 2021; 0: the image says nothing beyond the prior, 1: a point). The
*measurable range* is the longest run of consecutive truth bins whose mean contraction reaches
``threshold``
(default 0.9: the posterior's standard deviation at most a third of the prior's): outside it,
the posterior leans on the prior more and more.
"""

from __future__ import annotations

import numpy as np

from darklens.evaluate.calibration import central_intervals, truth_bins


def identifiability(samples: np.ndarray, truth: np.ndarray, prior_var: float,
                    n_bins: int = 8, threshold: float = 0.9) -> dict:
    """Width and contraction in bins of the truth for one target: draws (N, L), truths (N,)."""
    samples = np.asarray(samples, np.float64)
    truth = np.asarray(truth, np.float64).reshape(-1)
    if not prior_var > 0:
        raise ValueError("the prior's variance must be positive")
    var = samples.var(axis=1)
    lo, hi = central_intervals(samples, 0.68)
    contraction = 1.0 - var / prior_var
    edges = truth_bins(truth, n_bins)
    idx = np.clip(np.searchsorted(edges, truth, side="right") - 1, 0, len(edges) - 2)
    out: dict = {"edges": edges.tolist(), "n": [], "posterior_std": [], "width_68": [],
                 "contraction": [], "threshold": threshold, "prior_std": float(prior_var**0.5)}
    for b in range(len(edges) - 1):
        sel = idx == b
        out["n"].append(int(sel.sum()))
        out["posterior_std"].append(float(np.sqrt(var[sel]).mean()) if sel.any() else None)
        out["width_68"].append(float((hi - lo)[sel].mean()) if sel.any() else None)
        out["contraction"].append(float(contraction[sel].mean()) if sel.any() else None)
    runs, start = [], None  # the longest run of consecutive bins reaching the threshold
    for b, c in enumerate([*out["contraction"], None]):
        if c is not None and c >= threshold:
            start = b if start is None else start
        elif start is not None:
            runs.append((b - start, start, b))
            start = None
    if runs:
        _, a, b = max(runs)
        out["measurable_range"] = [float(edges[a]), float(edges[b])]
    else:
        out["measurable_range"] = None
    out["mean_contraction"] = float(contraction.mean())
    return out

