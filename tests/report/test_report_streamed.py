"""The benchmark report on HDF5 shards reads only the images it shows (labels and the
substructure_chi2 column up front), and is the same page as with the data loaded whole."""

from __future__ import annotations

import pytest
from report_toy import toy_rings

import darklens.report.html as report_html
import darklens.report.image_sections as image_sections
from darklens.benchmark import BenchmarkSpec, run_benchmark
from darklens.data.hdf5 import write_shard
from darklens.data.shards import ShardDataset

DETECTORS = ["knn", "deep-svdd"]
MAX_EMBED = 10  # fewer than the test images: the representation maps take a subset


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """A finished benchmark (no report) on 180 toy images as three shards with metadata."""
    root = tmp_path_factory.mktemp("report-shards")
    data = toy_rings(60)
    for k in range(3):
        write_shard(root / "data" / f"shard-{k:05d}.h5", data.select(data.labels == k))
    spec = BenchmarkSpec(detectors=DETECTORS, seeds=[0], data=str(root / "data"), epochs=1)
    run_benchmark(spec, root / "bench", log=lambda m: None, progress=False, cache_mb=0.01)
    return root / "bench", len(data)


def test_streamed_report_equals_the_loaded_one(bench, monkeypatch):
    bench_dir, n_images = bench
    loaded = report_html.build_report(bench_dir, MAX_EMBED)  # shards found: streamed
    with monkeypatch.context() as m:  # the former way: everything loaded first
        m.setattr(image_sections, "is_shard_path", lambda path: False)
        whole = report_html.build_report(bench_dir, MAX_EMBED)
    assert loaded == whole
    assert "substructure_chi2" in whole and "bin 1" in whole  # the column was read
    assert f"a random subset of {MAX_EMBED} (seed 0)" in whole


def test_streamed_report_reads_only_the_images_it_shows(bench, monkeypatch):
    bench_dir, n_images = bench
    reads: list[int] = []
    image = ShardDataset.image
    monkeypatch.setattr(ShardDataset, "image", lambda self, i: (reads.append(i),
                                                                image(self, i))[1])

    def no_loading(path):
        raise AssertionError("the report loaded the data whole")

    monkeypatch.setattr(image_sections, "load_dataset", no_loading)
    text = report_html.build_report(bench_dir, MAX_EMBED, cache_mb=0.01)
    assert 'id="representation"' in text and 'id="gallery"' in text
    # 8 per class (examples); per detector 8 + 8 extremes, 6 where-maps, MAX_EMBED embedded
    shown = 3 * 8 + len(DETECTORS) * (16 + 6 + MAX_EMBED)
    assert 0 < len(reads) <= shown < n_images
