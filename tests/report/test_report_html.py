"""report.html: one self-contained file with every section; regression runs add a section."""

from __future__ import annotations

import json
from html.parser import HTMLParser

from darklens.report.html import write_report

SECTIONS = ("summary", "roc", "histograms", "gallery", "extremes", "where-maps", "training",
            "representation", "detectability", "config")


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.refs: list[tuple[str, str, str]] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for k, v in attrs:
            if k in ("src", "href", "data", "poster", "srcset", "action"):
                self.refs.append((tag, k, v or ""))
            if k == "id":
                self.ids.add(v)


def test_report_is_self_contained_with_every_section(bench_dir):
    text = (bench_dir / "report.html").read_text()
    parser = _Refs()
    parser.feed(text)
    assert "http://" not in text and "https://" not in text and "//cdn" not in text
    assert not {"link", "iframe", "object", "embed"} & set(parser.tags)
    imgs = [v for t, k, v in parser.refs if t == "img"]
    assert len(imgs) >= 8 and all(v.startswith("data:image/png;base64,") for v in imgs)
    assert all(v.startswith("#") for t, k, v in parser.refs if k == "href")
    assert not [r for r in parser.refs if r[0] == "script"]  # inline scripts only
    assert set(SECTIONS) <= parser.ids
    assert 'alt="knn where-maps"' in text and 'alt="deep-svdd where-maps"' in text
    assert "regression" not in parser.ids
    # both detectors in the table, their representations, and the chi2 bins
    for det in ("knn", "deep-svdd"):
        assert f"<td>{det}</td>" in text
    assert "frozen feature map" in text and "feature network" in text
    assert "substructure_chi2" in text and "bin 1" in text


def test_regression_runs_get_a_section(bench_dir, tmp_path):
    run = bench_dir / "regression" / "axion"
    run.mkdir(parents=True)
    metrics = {"targets": {"log10_m": {"mae": 0.1, "rmse": 0.12, "r2": 0.9, "bias": 0.01,
                                       "coverage_68": 0.7, "coverage_95": 0.96}}}
    (run / "metrics.json").write_text(json.dumps(metrics))
    # a population estimate written beside it (darklens regress population --out)
    (run / "population.json").write_text(json.dumps({
        "target": "log10_m", "model": "shared", "n_lenses": 50, "estimate": -23.012,
        "sigma": 0.031, "true_mean": -23.0, "pull": -0.39}))
    (run / "predictions.csv").write_text(
        "index,log10_m_true,log10_m_mean,log10_m_sigma\n"
        + "".join(f"{i},{-23 + i / 10},{-23 + i / 10 + 0.05},0.1\n" for i in range(20)))
    try:
        path = write_report(bench_dir, out=tmp_path / "r.html")
        text = path.read_text()
        assert 'id="regression"' in text and "log10_m" in text and "0.700" in text
        assert text.count("<img ") >= 9
        assert "Population estimates" in text and "-23.01 ± 0.031" in text
        assert "<td>-0.39</td>" in text
    finally:
        (run / "metrics.json").unlink()
        (run / "population.json").unlink()


def test_information_plane_points_come_from_the_loss_terms(tmp_path):
    from darklens.report import figures
    from darklens.report.html import information_plane_points

    rows = "epoch,train_loss,infonce_bound,entropy_bound\n1,1.0,2.0,0.5\n2,0.5,3.0,0.25\n"
    runs = {}
    for det, text in (("infotheoretic", rows), ("dcae", "epoch,train_loss\n1,0.1\n")):
        d = tmp_path / det
        d.mkdir()
        (d / "losses.csv").write_text(text)
        runs[det] = [(0, d)]
    results = {"detectors": {det: {"seeds": {"0": {"metrics": {"auroc": {"all": 0.8}}}}}
                             for det in runs}}
    points = information_plane_points(results, runs)
    assert list(points) == ["infotheoretic"]  # no bounds recorded, no point
    (p,) = points["infotheoretic"]
    assert (p["entropy_bound"], p["infonce_bound"], p["auroc"]) == (0.25, 3.0, 0.8)
    assert p["path"] == [(0.5, 2.0), (0.25, 3.0)]
    fig = figures.information_plane_figure(points)
    assert fig.axes[0].get_xlabel().startswith("entropy bound")
