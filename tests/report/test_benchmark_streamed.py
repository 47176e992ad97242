"""`darklens benchmark` on HDF5 shards streams them (as `darklens train`) and scores the test
images a batch at a time: the same test scores and metrics as with the data loaded whole."""

from __future__ import annotations

import json

import pytest
from report_toy import toy_rings

import darklens.benchmark as bench
from darklens.benchmark import BenchmarkSpec, load_or_simulate, run_benchmark
from darklens.data.formats import load_dataset
from darklens.data.hdf5 import write_shard
from darklens.data.lensdata import LensData
from darklens.data.shards import ShardDataset


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """90 toy images as three shards of 30 (one per class)."""
    root = tmp_path_factory.mktemp("bench-shards")
    data = toy_rings(30)
    for k in range(3):
        part = data.select(data.labels == k)
        write_shard(root / f"shard-{k:05d}.h5", LensData(part.images, part.labels))
    return root


def _run(spec: BenchmarkSpec, out, **kw) -> dict:
    return run_benchmark(spec, out, log=lambda m: None, progress=False, **kw)


def test_streamed_benchmark_equals_the_loaded_one(shards, tmp_path, monkeypatch):
    spec = BenchmarkSpec(detectors=["knn", "deep-svdd"], seeds=[0], data=str(shards), epochs=1)
    data, _ = load_or_simulate(spec, tmp_path, cache_mb=0.01)
    assert isinstance(data, ShardDataset)
    seen = []
    score_test = bench.score_test
    monkeypatch.setattr(bench, "SCORE_BATCH", 7)  # several test batches
    monkeypatch.setattr(bench, "score_test", lambda d, data, *a, **k: (
        seen.append(type(data)), score_test(d, data, *a, **k))[1])
    streamed = _run(spec, tmp_path / "streamed", cache_mb=0.01)
    assert seen == [ShardDataset, ShardDataset]
    loaded = _run(spec, tmp_path / "loaded",
                  loaded=(load_dataset(shards), {"path": str(shards), "source": "given"}))
    assert streamed["data"]["fingerprint"] == loaded["data"]["fingerprint"]
    for det in spec.detectors:
        a, b = (r["detectors"][det]["seeds"]["0"] for r in (streamed, loaded))
        assert a["metrics"] == b["metrics"] and a["n_test"] == b["n_test"]
        csv_a, csv_b = ((tmp_path / w / "runs" / f"{det}-seed0" / "test_scores.csv").read_text()
                        for w in ("streamed", "loaded"))
        assert csv_a == csv_b and len(csv_a.splitlines()) > 8
    assert json.loads((tmp_path / "streamed" / "results.json").read_text())["data"]["n"] == 90
