"""Anomaly metrics: hand-computed answers, layout, and DeepLense's published 2020 AUROCs."""

from __future__ import annotations

import numpy as np
import pytest

from darklens.evaluate.metrics import anomaly_metrics, tpr_at_fpr
from reference import deeplense_reference

REFERENCE = deeplense_reference() / "unsupervised_lensing_2020_scores.npz"


def test_known_answer():
    # normal 1..4; cdm 2.5 (beats 2 of 4 normals) and 5 (beats all); vortex 0 (beats none)
    scores = np.array([1, 2, 3, 4, 2.5, 5, 0], dtype=float)
    labels = np.array([0, 0, 0, 0, 1, 1, 2])
    m = anomaly_metrics(scores, labels)
    assert set(m) == {"auroc", "auprc", "tpr_at_fpr_0.01", "n"}
    assert m["auroc"] == {"all": pytest.approx(6 / 12), "cdm": pytest.approx(6 / 8),
                          "vortex": pytest.approx(0.0)}
    # cdm ranking 5(a) 4 3 2.5(a) 2 1: precision 1 at recall 1/2, 2/4 at recall 1
    assert m["auprc"]["cdm"] == pytest.approx(0.5 * 1 + 0.5 * 0.5)
    assert m["tpr_at_fpr_0.01"]["cdm"] == pytest.approx(0.5)
    assert m["tpr_at_fpr_0.01"]["vortex"] == 0.0
    assert m["n"] == {"no_sub": 4, "cdm": 2, "vortex": 1, "all": 3}


def test_perfect_and_inverted_detectors():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 50)
    scores = labels + rng.uniform(0, 0.5, labels.size)
    m = anomaly_metrics(scores, labels)
    assert m["auroc"]["all"] == 1.0 and m["tpr_at_fpr_0.01"]["all"] == 1.0
    assert anomaly_metrics(-scores, labels)["auroc"]["all"] == 0.0


def test_tpr_at_fpr_picks_the_last_point_under_the_limit():
    y = np.r_[np.zeros(100), np.ones(4)]
    s = np.r_[np.arange(100.0), 99.5, 98.5, 50, 10]  # one normal (99) above two anomalies
    assert tpr_at_fpr(y, s, 0.0) == pytest.approx(0.25)
    assert tpr_at_fpr(y, s, 0.01) == pytest.approx(0.5)


def test_missing_classes_and_bad_scores_are_errors():
    with pytest.raises(ValueError, match="normal class"):
        anomaly_metrics(np.ones(3), np.array([1, 1, 2]))
    with pytest.raises(ValueError, match="no anomalous"):
        anomaly_metrics(np.ones(3), np.array([0, 0, 0]))
    with pytest.raises(ValueError, match="NaN"):
        anomaly_metrics(np.array([0.0, np.nan]), np.array([0, 1]))
    only_cdm = anomaly_metrics(np.array([0.0, 1.0]), np.array([0, 1]))
    assert set(only_cdm["auroc"]) == {"all", "cdm"}


# DeepLense's README table (all / cdm / vortex), recomputed from their published scores.
PUBLISHED = {
    ("aae", "model_a"): (0.933, 0.893, 0.974),
    ("vae", "model_a"): (0.901, 0.858, 0.944),
    ("dcae", "model_a"): (0.729, 0.683, 0.774),
    ("rbm", "model_a"): (0.513, 0.506, 0.519),
    ("aae", "model_b"): (0.771, 0.730, 0.812),
    ("vae", "model_b"): (0.739, 0.702, 0.775),
    ("dcae", "model_b"): (0.674, 0.610, 0.738),
    ("rbm", "model_b"): (0.510, 0.506, 0.513),
}


@pytest.mark.skipif(not REFERENCE.exists(), reason="DeepLense reference scores not available")
@pytest.mark.parametrize(("model", "dataset"), sorted(PUBLISHED))
def test_recomputes_deeplense_2020_aurocs(model, dataset):
    with np.load(REFERENCE, allow_pickle=False) as ref:
        parts = [ref[f"{model}__{dataset}__{c}"] for c in ("no_sub", "cdm", "vortex")]
    assert [len(p) for p in parts] == [2500, 1250, 1250]
    labels = np.repeat([0, 1, 2], [len(p) for p in parts])
    m = anomaly_metrics(np.concatenate(parts), labels)
    got = (m["auroc"]["all"], m["auroc"]["cdm"], m["auroc"]["vortex"])
    assert got == pytest.approx(PUBLISHED[model, dataset], abs=0.0015)
