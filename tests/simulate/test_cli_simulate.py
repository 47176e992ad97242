"""`darklens simulate`, `show` and `demo` from the command line."""

from __future__ import annotations

import numpy as np
import pytest

from darklens.cli import main
from darklens.data.formats import load_dataset


def _sim(out, *extra):
    return main(
        [
            "simulate",
            "--preset",
            "demo",
            "--n-per-class",
            "10",
            "--out",
            str(out),
            "--seed",
            "5",
            "--chunk-size",
            "4",
            *extra,
        ]
    )


def test_same_images_whatever_the_workers_shards_and_format(tmp_path):
    assert _sim(tmp_path / "one") == 0
    assert _sim(tmp_path / "two", "--workers", "2") == 0
    for i in range(3):
        assert _sim(tmp_path / "sharded", "--shard", f"{i}/3") == 0
    assert _sim(tmp_path / "npy", "--format", "npy") == 0
    ref = load_dataset(tmp_path / "one")
    assert len(ref) == 30 and ref.attrs["seed"] == 5
    order = np.lexsort((ref.metadata["index"], ref.labels))
    for other in ("two", "sharded", "npy"):
        data = load_dataset(tmp_path / other)
        o = np.lexsort((data.metadata["index"], data.labels))
        assert np.array_equal(data.images[o], ref.images[order]), other
        assert np.array_equal(data.labels[o], ref.labels[order])
        np.testing.assert_allclose(data.metadata["theta_e"][o], ref.metadata["theta_e"][order])


def test_rerun_skips_finished_shards_and_replaces_missing_ones(tmp_path, capsys):
    assert _sim(tmp_path) == 0
    shard = tmp_path / "cdm" / "shard-00001.h5"
    before = shard.stat().st_mtime_ns
    (tmp_path / "vortex" / "shard-00000.h5").unlink()
    (tmp_path / "vortex" / ".shard-00002.h5.abc.tmp").write_bytes(b"half written")  # a killed write
    capsys.readouterr()
    assert _sim(tmp_path) == 0
    assert "1 chunks written, 8 already there" in capsys.readouterr().out
    assert shard.stat().st_mtime_ns == before
    assert len(load_dataset(tmp_path)) == 30


def test_user_mistakes_exit_2_with_one_line(tmp_path, capsys):
    assert (
        main(["simulate", "--n-per-class", "2", "--out", str(tmp_path), "--classes", "wimp"]) == 2
    )
    assert "unknown class 'wimp'" in capsys.readouterr().err
    assert main(["simulate", "--n-per-class", "2", "--out", str(tmp_path), "--set", "nope=1"]) == 2
    assert main(["simulate", "--n-per-class", "2", "--out", str(tmp_path), "--shard", "3/2"]) == 2
    assert main(["show", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "no such file" in err


def test_show_and_demo_write_galleries(tmp_path):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--n-per-class", "6", "--quick",
                 "--no-progress"]) == 0
    assert (tmp_path / "demo" / "gallery.png").stat().st_size > 10_000
    # the quick demo trains and reports too (the full demo is sized for 10 minutes)
    assert (tmp_path / "demo" / "report.html").stat().st_size > 10_000
    assert (tmp_path / "demo" / "results.json").is_file()
    assert main(["show", str(tmp_path / "demo" / "data"), "--out", str(tmp_path / "g")]) == 0
    for name in ("gallery", "gallery_no_sub", "gallery_cdm", "gallery_vortex"):
        assert (tmp_path / "g" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("preset", ["model-ii", "physical"])
def test_preset_overrides_reach_the_images(tmp_path, preset):
    out = tmp_path / preset
    assert (
        main(
            [
                "simulate",
                "--preset",
                preset,
                "--n-per-class",
                "2",
                "--out",
                str(out),
                "--classes",
                "no_sub",
                "--set",
                "noise=none",
                "--set",
                "n_pix=32",
            ]
        )
        == 0
    )
    data = load_dataset(out)
    assert data.images.shape == (2, 1, 32, 32)
    assert data.attrs["preset"]["noise"] == "none"
