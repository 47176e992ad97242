"""benchmarks/infotheoretic.py: the beta curve and the pseudo-AUROC correlation it reports."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "infotheoretic.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("infotheoretic_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["infotheoretic_bench"] = module
    spec.loader.exec_module(module)
    return module


def _record(label: str, beta: float, entropy: float, infonce: float, test: dict[str, float],
            pseudo: dict[str, float], group: str = "tradeoff") -> dict:
    return {"preset": "demo", "group": group, "label": f"{label}, beta={beta:g}",
            "detector": "infotheoretic", "seed": 0, "seconds": 1.0, "default_score": "knn",
            "terms": {"entropy_bound": entropy, "infonce_bound": infonce},
            "scores": {k: {"auroc": {"all": v, "cdm": v, "vortex": v}} for k, v in test.items()},
            "diagnostics": {"pseudo_kind": "physical", "pseudo_auroc": pseudo,
                            "patch_swap_auroc": {k: 1 - v for k, v in pseudo.items()},
                            "collapsed": False}}


def test_beta_curve_and_selection_correlation(bench) -> None:
    recs = [_record("dot critic", b, e, i, {"knn": t, "norm": t / 2}, {"knn": t, "norm": t / 2})
            for b, e, i, t in ((1.0, 0.5, 3.0, 0.9), (0.0, 4.0, 4.5, 0.6), (0.1, 2.0, 4.0, 0.7))]
    table = bench.summarise(recs)
    (curve,) = bench.beta_curves(table)["demo"].values()
    assert [p["beta"] for p in curve] == [0.0, 0.1, 1.0]
    assert [p["entropy_bound"] for p in curve] == [4.0, 2.0, 0.5]
    assert [p["infonce_bound"] for p in curve] == [4.5, 4.0, 3.0]
    corr = bench.selection_correlation(recs)["demo"]
    assert corr["physical"]["n"] == 6 and corr["physical"]["spearman"] == pytest.approx(1.0)
    assert corr["patch_swap"]["spearman"] == pytest.approx(-1.0)
    assert corr["chosen"]["n"] == 3
