"""The report's regression calibration: rows and figures from metrics.json entries."""

from __future__ import annotations

import numpy as np

from darklens.evaluate.calibration import calibration_report
from darklens.evaluate.identifiability import identifiability
from darklens.report.regression_figures import calibration_figure
from darklens.report.regression_section import regression_calibration


def _metrics():
    rng = np.random.default_rng(0)
    truth = rng.uniform(-24, -22, 400)
    width = np.where(truth < -23.3, 0.05, 0.4)
    samples = np.clip(truth[:, None] + width[:, None] * rng.normal(size=(400, 64)), -24, -22)
    cal = calibration_report(samples[..., None], truth[:, None], ["m"], [[-24, -22]])
    ident = identifiability(samples, truth, 4 / 12)
    return {"posterior": "binned",
            "targets": {"m": {"mae": 0.1, "calibration": cal["targets"]["m"],
                              "identifiability": ident}}}


def test_calibration_rows_and_figures(tmp_path):
    metrics = _metrics()
    rows, imgs = regression_calibration([{"run": str(tmp_path / "axion"), "metrics": metrics}])
    assert len(rows) == 1 and rows[0][:3] == ["axion", "m", "binned"]
    assert rows[0][-1].startswith("[-24") and len(imgs) == 1 and imgs[0].startswith("<img")
    # runs evaluated before calibration existed: no row
    old = {"targets": {"m": {"mae": 0.1}}}
    assert regression_calibration([{"run": "x", "metrics": old}]) == ([], [])
    path = calibration_figure("m", metrics["targets"]["m"], tmp_path)
    assert path.read_bytes()[:4] == b"\x89PNG"
