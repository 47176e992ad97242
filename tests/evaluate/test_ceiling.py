"""The oracles' AUROCs follow their closed forms and order as they must."""

from __future__ import annotations

import math

import numpy as np

from darklens.evaluate.ceiling import ceiling_table, chi2_oracle_auroc, matched_filter_auroc


def test_matched_filter_closed_form():
    assert matched_filter_auroc(np.array([0.0])) == 0.5
    expected = 0.5 * math.erfc(-math.sqrt(4.0) / math.sqrt(2))  # Phi(2) for lambda = 8
    assert abs(matched_filter_auroc(np.array([8.0])) - expected) < 1e-12
    assert matched_filter_auroc(np.array([1e4])) > 0.999


def test_chi2_oracle_against_its_gaussian_limit():
    # chi2_N vs non-central chi2_N(lambda), N large: difference ~ N(lambda, 4N + 4 lambda)
    n, lam = 4096, 200.0
    approx = 0.5 * math.erfc(-lam / math.sqrt(4 * n + 4 * lam) / math.sqrt(2))
    got = chi2_oracle_auroc(np.full(4000, lam), n, seed=1)
    assert abs(got - approx) < 0.02
    # knowing the substructure too is never worse
    assert matched_filter_auroc(np.full(10, lam)) >= got


def test_table_per_class_skips_normals_and_nan():
    labels = np.array([0, 0, 1, 1, 2, 2])
    lam = np.array([0.0, 0.0, 50.0, np.nan, 5000.0, 8000.0])
    table = ceiling_table(labels, ("no_sub", "cdm", "vortex"), lam, 1024)
    assert set(table["ceiling"]) == {"cdm", "vortex", "all"}
    assert table["ceiling"]["vortex"] > table["ceiling"]["cdm"] > 0.5
    assert table["chi2_oracle"]["vortex"] > 0.99
