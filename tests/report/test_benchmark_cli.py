"""`darklens benchmark` end to end on a tiny data set: results.json, shared splits, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
from report_toy import BENCH_ARGS

from darklens.benchmark import read_test_scores
from darklens.cli import main


def test_results_hold_every_metric_per_detector_seed_and_class(bench_dir, toy_data_dir):
    r = json.loads((bench_dir / "results.json").read_text())
    assert set(r["detectors"]) == {"knn", "deep-svdd"}
    for det, entry in r["detectors"].items():
        assert set(entry["seeds"]) == {"0", "1"}
        for rec in entry["seeds"].values():
            for metric in ("auroc", "auprc", "tpr_at_fpr_0.01"):
                assert set(rec["metrics"][metric]) == {"all", "cdm", "vortex"}
                assert all(0 <= v <= 1 for v in rec["metrics"][metric].values())
            assert rec["train_seconds"] >= 0 and "images_per_second" in rec
            assert rec["config"]["image_size"] == 32
        s = r["summary"][det]["auroc"]["all"]
        runs = [e["metrics"]["auroc"]["all"] for e in entry["seeds"].values()]
        assert np.isclose(s["mean"], np.mean(runs)) and np.isclose(s["std"], np.std(runs, ddof=1))
    assert r["detectors"]["deep-svdd"]["seeds"]["0"]["epochs_run"] == 1
    assert r["versions"]["torch"] and r["versions"]["darklens"] and r["date"]
    assert r["machine"]["cpu_count"] >= 1
    assert r["splits"]["1"]["seed"] == 1
    # toy anomalies are bright blobs: the kNN baseline must see them
    assert r["summary"]["knn"]["auroc"]["all"]["mean"] > 0.8
    assert (bench_dir / "report.html").stat().st_size > 10_000


def test_every_detector_of_a_seed_is_tested_on_the_same_images(bench_dir):
    runs = bench_dir / "runs"
    knn0, svdd0 = (read_test_scores(runs / f"{d}-seed0")[0] for d in ("knn", "deep-svdd"))
    knn1 = read_test_scores(runs / "knn-seed1")[0]
    np.testing.assert_array_equal(knn0, svdd0)
    assert len(knn0) == len(knn1) and not np.array_equal(knn0, knn1)  # the seed moves the split


def test_a_benchmark_run_is_a_train_run_that_evaluate_reproduces(bench_dir, toy_data_dir):
    run = bench_dir / "runs" / "knn-seed1"
    assert main(["evaluate", str(run), "--data", str(toy_data_dir)]) == 0
    m = json.loads((run / "metrics.json").read_text())
    rec = json.loads((run / "result.json").read_text())
    assert m["auroc"] == rec["metrics"]["auroc"]


def test_rerun_keeps_finished_runs_and_redoes_missing_ones(bench_dir, toy_data_dir, capsys):
    runs = bench_dir / "runs"
    stamps = {p.parent.name: p.stat().st_mtime_ns for p in runs.glob("*/result.json")}
    (runs / "deep-svdd-seed1" / "result.json").unlink()  # as if interrupted before the end
    capsys.readouterr()
    assert main(["benchmark", "--data", str(toy_data_dir), "--out", str(bench_dir),
                 "--no-report", *BENCH_ARGS]) == 0
    out = capsys.readouterr().out
    assert out.count("finished earlier, kept") == 3
    after = {p.parent.name: p.stat().st_mtime_ns for p in runs.glob("*/result.json")}
    assert set(after) == set(stamps)
    assert all(after[k] == stamps[k] for k in stamps if k != "deep-svdd-seed1")
    assert "AUROC all" in out and "results:" in out


def test_budget_plans_epochs_and_user_mistakes_exit_2(toy_data_dir, tmp_path):
    out = tmp_path / "b"
    assert main(["benchmark", "--data", str(toy_data_dir), "--out", str(out), "--detectors",
                 "deep-svdd,knn", "--budget-minutes", "0.0001", "--no-report",
                 "--no-progress"]) == 0
    r = json.loads((out / "results.json").read_text())
    assert r["budget"]["runs_with_training"] == 1  # kNN trains nothing: no share for it
    assert r["budget"]["seconds_per_run"] == pytest.approx(0.006)
    rec = r["detectors"]["deep-svdd"]["seeds"]["0"]
    # a budget far below one epoch plans the minimum, one epoch (not Deep SVDD's default 30),
    # whatever the machine's speed
    assert rec["epochs_run"] == rec["epochs_planned"] == 1
    assert rec["train"]["max_minutes"] > 0 and rec["probe"]["probe_seconds"] > 0
    assert main(["benchmark", "--data", str(toy_data_dir), "--out", str(out),
                 "--detectors", "nope"]) == 2
