"""HDF5 shards, DeepLense class folders, load_dataset and convert-deeplense."""

from __future__ import annotations

import math
import os
import shutil
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from darklens import __version__, cli
from darklens.data import npy_safe
from darklens.data.formats import (
    UNLABELLED,
    concatenate,
    convert_deeplense,
    load_dataset,
    read_deeplense_folder,
    read_shard,
    write_deeplense_folder,
    write_shard,
)
from darklens.data.lensdata import CLASSES, LensData
from darklens.errors import DataError
from reference import deeplense_reference

REFERENCE = deeplense_reference() / "images"


def assert_same(a: LensData, b: LensData, metadata: list[str] | None = None) -> None:
    assert a.images.dtype == b.images.dtype == np.float32
    assert a.images.tobytes() == b.images.tobytes()  # bitwise
    np.testing.assert_array_equal(a.labels, b.labels)
    assert tuple(a.class_names) == tuple(b.class_names)
    for name in metadata if metadata is not None else list(a.metadata):
        np.testing.assert_array_equal(a.metadata[name], b.metadata[name])  # NaN == NaN here


def by_class(data: LensData) -> LensData:
    """The order the DeepLense reader returns: class by class (stable)."""
    return data.select(np.argsort(data.labels, kind="stable"))


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# ----------------------------------------------------------------------------- HDF5 shards


def test_shard_round_trip(tmp_path: Path, lens_data: LensData) -> None:
    path = write_shard(tmp_path / "s.h5", lens_data)
    back = read_shard(path)
    assert_same(lens_data, back)
    assert list(back.metadata) == list(lens_data.metadata)
    assert back.metadata["n_subhalos"].dtype == np.int64
    assert back.metadata["subhalo_mass"].shape == lens_data.metadata["subhalo_mass"].shape
    assert back.attrs == {**lens_data.attrs, "darklens_version": __version__}
    with h5py.File(path) as f:  # inspectable without darklens
        assert f.attrs["format"] == "darklens-shard"
        assert f.attrs["seed"] == lens_data.attrs["seed"]
        assert f.attrs["preset"] == "test"
        assert f["images"].shape == lens_data.images.shape
    assert listing(tmp_path) == ["s.h5"]


def test_shard_written_from_arrays(tmp_path: Path, lens_data: LensData) -> None:
    metadata = {"label": lens_data.labels, **lens_data.metadata}
    attrs = {"class_names": list(CLASSES), "seed": 5}
    write_shard(tmp_path / "s.h5", lens_data.images, metadata, attrs)
    back = read_shard(tmp_path / "s.h5")
    assert_same(lens_data, back)
    assert back.attrs["seed"] == 5 and "label" not in back.metadata


def test_shard_write_is_atomic(tmp_path: Path, lens_data: LensData, monkeypatch) -> None:
    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(h5py.Group, "create_group", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        write_shard(tmp_path / "s.h5", lens_data)
    assert listing(tmp_path) == []  # neither the target nor a temp file


@pytest.mark.parametrize("case", ["random-bytes", "truncated", "empty", "no-images"])
def test_corrupt_shard(tmp_path: Path, lens_data: LensData, case: str) -> None:
    path = tmp_path / "bad.h5"
    if case == "random-bytes":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif case == "truncated":
        write_shard(tmp_path / "good.h5", lens_data)
        path.write_bytes((tmp_path / "good.h5").read_bytes()[:3000])
    elif case == "empty":
        path.write_bytes(b"")
    else:
        with h5py.File(path, "w") as f:
            f["label"] = np.zeros(3, np.int64)
    with pytest.raises(DataError) as err:
        read_shard(path)
    assert str(path) in str(err.value)
    with pytest.raises(DataError):
        load_dataset(path)


def test_flipped_bytes_in_shard_are_detected(tmp_path: Path, lens_data: LensData) -> None:
    path = write_shard(tmp_path / "s.h5", lens_data)
    with h5py.File(path) as f:
        offset = f["images"].id.get_chunk_info(0).byte_offset
    content = bytearray(path.read_bytes())
    content[offset + 100 : offset + 104] = b"\x00\x00\x80\x3f"  # a plausible float32 (1.0)
    path.write_bytes(bytes(content))
    with pytest.raises(DataError, match="corrupt HDF5 shard") as err:
        read_shard(path)
    assert str(path) in str(err.value)


def test_shard_with_nan_image_is_refused(tmp_path: Path, lens_data: LensData) -> None:
    lens_data.images[4, 0, 2, 2] = np.nan
    write_shard(tmp_path / "s.h5", lens_data)
    with pytest.raises(DataError, match="image 4 has NaN"):
        read_shard(tmp_path / "s.h5")


# ----------------------------------------------------------------------------- DeepLense folders


def test_deeplense_round_trip(tmp_path: Path, lens_data: LensData) -> None:
    files = write_deeplense_folder(tmp_path, lens_data)
    assert len(files) == len(lens_data)
    back = read_deeplense_folder(tmp_path)
    assert_same(by_class(lens_data), back, metadata=["theta_e", "n_subhalos"])
    assert "subhalo_mass" not in back.metadata  # 2-D columns are not written to CSV
    assert back.metadata["n_subhalos"].dtype == np.int64
    lines = (tmp_path / "labels.csv").read_text().splitlines()
    assert lines[0] == "file,class,theta_e,n_subhalos"
    assert lines[1].startswith("cdm/cdm_000000.npy,cdm,")
    assert [line.split(",")[0] for line in lines[1:]] == sorted(
        line.split(",")[0] for line in lines[1:]
    )
    assert not [p for p in tmp_path.rglob(".*")]  # no temp files


def test_labels_csv_accumulates_over_calls(tmp_path: Path, lens_data: LensData) -> None:
    write_deeplense_folder(tmp_path, lens_data.of_class("vortex"))
    write_deeplense_folder(tmp_path, lens_data.of_class("no_sub"))
    write_deeplense_folder(tmp_path, lens_data.of_class("no_sub"))  # continues numbering
    write_deeplense_folder(tmp_path, lens_data.of_class("cdm"), names=["a", "b", "c"])
    write_deeplense_folder(tmp_path, lens_data.of_class("cdm"), names=["a", "b", "c"])  # replaces
    rows = (tmp_path / "labels.csv").read_text().splitlines()[1:]
    assert len(rows) == 3 + 6 + 3
    assert rows[0].startswith("cdm/a.npy,") and rows[-1].startswith("vortex/vortex_000002.npy,")
    assert (tmp_path / "no_sub" / "no_sub_000005.npy").exists()
    back = read_deeplense_folder(tmp_path)
    assert len(back) == 12 and np.bincount(back.labels).tolist() == [6, 3, 3]


def test_names_from_index_column(tmp_path: Path, lens_data: LensData) -> None:
    lens_data.metadata["index"] = np.arange(100, 109)
    write_deeplense_folder(tmp_path, lens_data)
    assert (tmp_path / "vortex" / "vortex_000108.npy").exists()


def copy_reference(root: Path, folders: tuple[str, str, str]) -> None:
    if not REFERENCE.is_dir():
        pytest.skip("DeepLense reference images not available")
    for source, folder in zip(("nosub", "cdm", "axion"), folders, strict=True):
        (root / folder).mkdir(parents=True)
        shutil.copy(REFERENCE / f"{source}.npy", root / folder / f"{source}.npy")


@pytest.mark.parametrize(
    "folders",
    [("no_sub", "cdm", "vortex"), ("no_substructure", "sub", "axion"), ("NoSub", "CDM", "vort")],
)
def test_real_deeplense_images_load(tmp_path: Path, folders: tuple[str, str, str]) -> None:
    copy_reference(tmp_path, folders)
    data = load_dataset(tmp_path)
    assert data.images.shape == (3, 1, 64, 64) and data.images.dtype == np.float32
    assert data.labels.tolist() == [0, 1, 2] and data.class_names == CLASSES
    for i, name in enumerate(("nosub", "cdm", "axion")):
        reference = np.load(REFERENCE / f"{name}.npy", allow_pickle=False)
        np.testing.assert_array_equal(data.images[i, 0], reference.astype(np.float32))
    assert len(load_dataset(tmp_path, classes=["cdm"])) == 1


def test_two_folders_for_one_class(tmp_path: Path) -> None:
    copy_reference(tmp_path, ("no_sub", "axion", "vortex"))  # axion and vortex: both vortex
    with pytest.raises(DataError, match="both 'axion' and 'vortex'"):
        read_deeplense_folder(tmp_path)


def test_mixed_sizes_in_a_folder(tmp_path: Path) -> None:
    npy_safe.save_npy(tmp_path / "cdm" / "a.npy", np.zeros((16, 16), np.float32))
    npy_safe.save_npy(tmp_path / "cdm" / "b.npy", np.zeros((16, 12), np.float32))
    with pytest.raises(DataError) as err:
        read_deeplense_folder(tmp_path)
    assert str(tmp_path / "cdm" / "b.npy") in str(err.value) and "(16, 12)" in str(err.value)


def test_empty_and_missing_class_folders(tmp_path: Path, lens_data: LensData) -> None:
    write_deeplense_folder(tmp_path, lens_data.of_class("no_sub"))
    with pytest.raises(DataError, match="class folder for 'vortex' is missing") as err:
        read_deeplense_folder(tmp_path, classes=["no_sub", "vortex"])
    assert str(tmp_path / "vortex") in str(err.value)
    (tmp_path / "cdm").mkdir()
    with pytest.raises(DataError, match="class folder 'cdm' holds no .npy images") as err:
        read_deeplense_folder(tmp_path)
    assert str(tmp_path / "cdm") in str(err.value)
    with pytest.raises(DataError, match="unknown class 'dark'"):
        read_deeplense_folder(tmp_path, classes=["dark"])


def test_bad_image_in_folder_names_the_file(tmp_path: Path, lens_data: LensData) -> None:
    write_deeplense_folder(tmp_path, lens_data.of_class("cdm"))
    bad = tmp_path / "cdm" / "cdm_000001.npy"
    np.save(bad, np.ones((16, 16), np.int32))
    with pytest.raises(DataError, match="integer dtype int32") as err:
        load_dataset(tmp_path)
    assert str(bad) in str(err.value)


def test_stray_files_are_skipped_with_a_warning(tmp_path: Path, lens_data: LensData) -> None:
    write_deeplense_folder(tmp_path, lens_data)
    (tmp_path / "cdm" / "notes.txt").write_text("not an image")
    (tmp_path / "cdm" / "thumbs").mkdir()
    (tmp_path / "cdm" / ".cdm_000009.npy.x1y2.tmp").write_bytes(b"half")  # unfinished write
    (tmp_path / "README").write_text("top-level files are not class content")
    with pytest.warns(UserWarning, match=r"skipped 2 non-\.npy entries: notes\.txt, thumbs/"):
        back = read_deeplense_folder(tmp_path)
    assert len(back) == len(lens_data)


def test_labels_csv_with_missing_or_extra_rows(tmp_path: Path, lens_data: LensData) -> None:
    write_deeplense_folder(tmp_path, lens_data)
    csv_path = tmp_path / "labels.csv"
    good = csv_path.read_text()
    lines = good.splitlines()

    csv_path.write_text("\n".join(lines[:3] + lines[4:]) + "\n")  # drop cdm_000002
    with pytest.raises(DataError, match="1 image file.*have no row: cdm/cdm_000002.npy") as err:
        read_deeplense_folder(tmp_path)
    assert str(csv_path) in str(err.value)

    csv_path.write_text(good + "vortex/ghost.npy,vortex,1.0,2\nelsewhere.npy,cdm,1.0,2\n")
    with pytest.raises(DataError, match="2 row.*do not exist: elsewhere.npy, vortex/ghost.npy"):
        read_deeplense_folder(tmp_path)

    csv_path.write_text(good.replace("cdm/cdm_000000.npy,cdm", "cdm/cdm_000000.npy,vortex"))
    with pytest.raises(DataError, match="has class 'vortex' but lies in a cdm folder"):
        read_deeplense_folder(tmp_path)

    csv_path.write_text(good + lines[1] + "\n")
    with pytest.raises(DataError, match="listed twice"):
        read_deeplense_folder(tmp_path)

    csv_path.write_text(good)
    assert len(read_deeplense_folder(tmp_path, classes=["cdm"])) == 3  # other rows ignored


def test_deeplense_write_is_atomic(tmp_path: Path, lens_data: LensData, monkeypatch) -> None:
    real_save = np.save

    def half_then_fail(file, arr, allow_pickle=False):
        real_save(file, arr[:2], allow_pickle=allow_pickle)  # a partial file, then a crash
        raise OSError("disk full")

    monkeypatch.setattr(npy_safe.np, "save", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_deeplense_folder(tmp_path, lens_data)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


# ----------------------------------------------------------------------------- load_dataset


def test_load_dataset_directory_of_shards(tmp_path: Path, make_lens_data) -> None:
    parts = [make_lens_data(n_per_class=2, seed=s) for s in range(3)]
    parts[2].metadata["subhalo_mass"] = parts[2].metadata["subhalo_mass"][:, :1]  # narrower
    write_shard(tmp_path / "b" / "shard-1.h5", parts[1])
    write_shard(tmp_path / "a" / "shard-0.h5", parts[0])
    write_shard(tmp_path / "b" / "shard-2.hdf5", parts[2])
    (tmp_path / "b" / ".shard-3.h5.abc.tmp").write_bytes(b"unfinished")
    (tmp_path / "b" / ".shard-4.h5").write_bytes(b"unfinished")
    data = load_dataset(tmp_path)
    assert len(data) == 18
    assert data.images.tobytes() == np.concatenate([p.images for p in parts]).tobytes()
    mass = data.metadata["subhalo_mass"]
    assert mass.shape == (18, 3) and np.isnan(mass[12:, 1:]).all()
    np.testing.assert_array_equal(mass[:6], parts[0].metadata["subhalo_mass"])
    assert [Path(s).name for s in data.attrs["sources"]] == [
        "shard-0.h5",
        "shard-1.h5",
        "shard-2.hdf5",
    ]
    vortex = load_dataset(tmp_path, classes=["vortex"])
    assert len(vortex) == 6 and set(vortex.labels) == {2}


def test_load_dataset_shards_in_class_folders(tmp_path: Path, lens_data: LensData) -> None:
    """The layout ``darklens simulate`` writes: <out>/<class>/shard-NNNNN.h5."""
    for name in ("vortex", "no_sub"):
        write_shard(tmp_path / name / "shard-00000.h5", lens_data.of_class(name))
    data = load_dataset(tmp_path)
    assert data.labels.tolist() == [0, 0, 0, 2, 2, 2]  # sorted paths: no_sub/ before vortex/


def test_concatenate_checks_sizes_and_drops_partial_columns(make_lens_data) -> None:
    a, b = make_lens_data(seed=0), make_lens_data(seed=1)
    del b.metadata["theta_e"]
    with pytest.warns(UserWarning, match="theta_e missing from some shards"):
        joined = concatenate([a, b])
    assert "theta_e" not in joined.metadata and len(joined) == 18
    with pytest.raises(DataError, match="image size"):
        concatenate([a, make_lens_data(size=8)], [Path("a.h5"), Path("b.h5")])


def test_load_dataset_single_files(tmp_path: Path, lens_data: LensData) -> None:
    write_shard(tmp_path / "one.h5", lens_data)
    assert_same(lens_data, load_dataset(tmp_path / "one.h5"))
    nosub = write_shard(tmp_path / "nosub.h5", lens_data.of_class("no_sub"))
    with pytest.raises(DataError, match="no images of class 'cdm'"):
        load_dataset(nosub, ["cdm"])
    npy_safe.save_npy(tmp_path / "img" / "x.npy", lens_data.images[0, 0])
    npy_safe.save_npy(tmp_path / "img" / "y.npy", lens_data.images[1, 0])
    single = load_dataset(tmp_path / "img" / "x.npy")
    assert single.labels.tolist() == [UNLABELLED] and single.images.shape == (1, 1, 16, 16)
    folder = load_dataset(tmp_path / "img")
    assert folder.images.tobytes() == lens_data.images[:2].tobytes()


def test_load_dataset_nothing_usable(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file or directory"):
        load_dataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="nothing to load") as err:
        load_dataset(tmp_path / "empty")
    assert str(tmp_path / "empty") in str(err.value)
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match="unknown file type"):
        load_dataset(tmp_path / "notes.txt")


# ----------------------------------------------------------------------------- conversion


def public_tree(root: Path, payload_marker: Path | None = None) -> dict[str, float]:
    """A miniature public DeepLense tree: plain no_sub images, pickled [image, mass] axions."""
    rng = np.random.default_rng(3)
    masses = {}
    for i in range(2):
        npy_safe.save_npy(root / "no_substructure" / f"ns{i}.npy", rng.random((16, 16)))
        item = np.empty(2, dtype=object)
        item[0], item[1] = rng.random((16, 16)), 10 ** rng.uniform(-24, -22)
        masses[f"vortex/ax{i}.npy"] = item[1]
        np.save(root / "axion" / f"ax{i}.npy", item, allow_pickle=True)
    if payload_marker is not None:

        class Payload:
            def __reduce__(self):
                return (exec, (f"open({str(payload_marker)!r}, 'w').close()",))

        evil = np.empty(2, dtype=object)
        evil[0], evil[1] = Payload(), 1e-23
        np.save(root / "axion" / "zz.npy", evil, allow_pickle=True)
    return masses


def test_convert_deeplense_refuses_pickle_by_default(tmp_path: Path) -> None:
    (tmp_path / "src" / "axion").mkdir(parents=True)
    marker = tmp_path / "pwned"
    public_tree(tmp_path / "src", payload_marker=marker)
    with pytest.raises(DataError, match="pickled object array.*--trust-pickle") as err:
        convert_deeplense(tmp_path / "src", tmp_path / "dst")
    assert str(tmp_path / "src" / "axion" / "ax0.npy") in str(err.value)
    assert not marker.exists()
    assert not (tmp_path / "dst").exists()  # headers are checked before anything is written
    with pytest.raises(DataError, match="--trust-pickle"):
        load_dataset(tmp_path / "src")


def test_convert_deeplense_with_trust(tmp_path: Path) -> None:
    (tmp_path / "src" / "axion").mkdir(parents=True)
    masses = public_tree(tmp_path / "src")
    (tmp_path / "src" / "axion" / "readme.txt").write_text("stray")
    logged: list[str] = []
    with pytest.warns(UserWarning) as record:
        counts = convert_deeplense(tmp_path / "src", tmp_path / "dst", True, log=logged.append)
    assert any("running pickle" in str(w.message) for w in record)
    assert any("running pickle" in line for line in logged)
    assert counts == {"no_sub": 2, "vortex": 2}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the converted tree reads without any pickle or warning
        data = load_dataset(tmp_path / "dst")
    assert data.labels.tolist() == [0, 0, 2, 2]
    log_mass = data.metadata["log10_axion_mass"]
    assert np.isnan(log_mass[:2]).all()
    assert log_mass[2] == math.log10(masses["vortex/ax0.npy"])
    assert log_mass[3] == math.log10(masses["vortex/ax1.npy"])


def test_cli_convert_deeplense(tmp_path: Path, monkeypatch, capsys) -> None:
    (tmp_path / "src" / "axion").mkdir(parents=True)
    public_tree(tmp_path / "src")
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("convert_deeplense",))
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    assert cli.main(["convert-deeplense", src, dst]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--trust-pickle" in err and "Traceback" not in err
    with pytest.warns(UserWarning, match="running pickle"):
        assert cli.main(["convert-deeplense", src, dst, "--trust-pickle"]) == 0
    assert "wrote 4 images" in capsys.readouterr().out
    assert sorted(os.listdir(dst)) == ["labels.csv", "no_sub", "vortex"]


def test_convert_rejects_garbage_pickle(tmp_path: Path) -> None:
    item = np.empty(3, dtype=object)
    item[0], item[1], item[2] = "a", "b", "c"
    (tmp_path / "src" / "axion").mkdir(parents=True)
    np.save(tmp_path / "src" / "axion" / "x.npy", item, allow_pickle=True)
    with pytest.warns(UserWarning), pytest.raises(DataError, match="expected \\[image, mass\\]"):
        convert_deeplense(tmp_path / "src", tmp_path / "dst", trust_pickle=True)
