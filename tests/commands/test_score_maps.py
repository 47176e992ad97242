"""`darklens score --maps DIR`: a where-map overlay (PNG) beside the CSV for every scored image."""

from __future__ import annotations

import csv

import matplotlib.image as mpimg
import pytest

from darklens.cli import main
from darklens.data.formats import write_deeplense_folder
from toy_lenses import toy_lensdata


@pytest.mark.parametrize("detector, config", [("knn", "{}"), ("dcae", '{"latent_dim": 8}')])
def test_maps_beside_the_csv(tmp_path, detector, config):
    write_deeplense_folder(tmp_path / "train", toy_lensdata(20, size=32, seed=0))
    write_deeplense_folder(tmp_path / "new", toy_lensdata(2, size=32, seed=5))
    run = tmp_path / "run"
    assert main(["train", "--detector", detector, "--data", str(tmp_path / "train"),
                 "--out", str(run), "--epochs", "1", "--config", config, "--no-progress"]) == 0
    out, maps = tmp_path / "scores.csv", tmp_path / "maps"
    assert main(["score", str(run), str(tmp_path / "new"), "--csv", str(out),
                 "--maps", str(maps)]) == 0
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6 and list(rows[0])[-2:] == ["map", "flag"]
    names = [r["map"] for r in rows]
    assert len(set(names)) == 6 and sorted(p.name for p in maps.iterdir()) == sorted(names)
    for r in rows:
        assert r["map"].endswith(".png") and r["source"].rsplit("/", 1)[1][:-4] in r["map"]
        picture = mpimg.imread(maps / r["map"])
        assert picture.shape[:2] == (128, 128)  # 32x32 at zoom 4
