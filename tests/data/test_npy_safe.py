"""The safe .npy reader: round trips, a corpus of bad files, pickle refusal, fuzzing."""

from __future__ import annotations

import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bad_npy import npy_bytes, pickled_npy
from darklens.data.npy_safe import load_npy, read_npy_header, save_npy
from darklens.errors import DataError
from reference import deeplense_reference

RNG = np.random.default_rng(1)
IMAGE = RNG.normal(size=(8, 8)).astype(np.float32)


def header_bytes(header: str, version: tuple[int, int] = (1, 0)) -> bytes:
    """A hand-made .npy header (the dict text padded to 64 bytes, as numpy does)."""
    fmt = "<H" if version == (1, 0) else "<I"
    prefix = 10 if version == (1, 0) else 12
    text = header + " " * (-(prefix + len(header) + 1) % 64) + "\n"
    return b"\x93NUMPY" + bytes(version) + struct.pack(fmt, len(text)) + text.encode("latin1")


# ----------------------------------------------------------------------------- good files


@pytest.mark.parametrize(
    "array",
    [
        IMAGE,
        IMAGE.astype(np.float64),
        IMAGE.astype(np.float16),
        IMAGE.astype(">f8"),
        np.asfortranarray(IMAGE),
        IMAGE[None],
        IMAGE[:, :, None],
        IMAGE[:, :5],
    ],
    ids=["f32", "f64", "f16", "big-endian", "fortran", "1HW", "HW1", "non-square"],
)
def test_load_accepts_float_images(tmp_path: Path, array: np.ndarray) -> None:
    path = tmp_path / "img.npy"
    np.save(path, array, allow_pickle=False)
    out = load_npy(path)
    assert out.dtype == np.float32 and out.flags.c_contiguous and out.flags.writeable
    expected = np.squeeze(np.asarray(array, dtype=np.float32))
    np.testing.assert_array_equal(out, expected)


def test_save_load_round_trip_is_bitwise(tmp_path: Path) -> None:
    path = save_npy(tmp_path / "sub" / "a.npy", IMAGE)
    assert path == tmp_path / "sub" / "a.npy"
    assert load_npy(path).tobytes() == IMAGE.tobytes()
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.npy"]  # no temp file left


def test_real_deeplense_images_load() -> None:
    root = deeplense_reference() / "images"
    if not root.is_dir():
        pytest.skip("DeepLense reference images not available")
    for name in ("nosub", "cdm", "axion"):
        image = load_npy(root / f"{name}.npy")
        reference = np.load(root / f"{name}.npy", allow_pickle=False)
        assert image.shape == (64, 64) and image.dtype == np.float32
        np.testing.assert_array_equal(image, reference.astype(np.float32))


# ----------------------------------------------------------------------------- bad files


BAD_FILES = {
    "nan": (npy_bytes(np.where(IMAGE > 1, np.nan, IMAGE)), "NaN"),
    "inf": (npy_bytes(np.where(IMAGE > 1, np.inf, IMAGE)), "Inf"),
    "too-large-for-float32": (npy_bytes(np.full((4, 4), 1e300)), "too large for float32"),
    "3d-wrong-shape": (npy_bytes(np.zeros((2, 8, 8), np.float32)), "wrong shape (2, 8, 8)"),
    "1d": (npy_bytes(np.zeros(64, np.float32)), "wrong shape (64,)"),
    "4d": (npy_bytes(np.zeros((1, 1, 8, 8), np.float32)), "wrong shape (1, 1, 8, 8)"),
    "empty-image": (npy_bytes(np.zeros((0, 8), np.float32)), "empty image"),
    "int": (npy_bytes(np.arange(64, dtype=np.int16).reshape(8, 8)), "integer dtype int16"),
    "uint8": (npy_bytes(np.zeros((8, 8), np.uint8)), "unsigned integer dtype uint8"),
    "bool": (npy_bytes(np.zeros((8, 8), bool)), "boolean dtype"),
    "complex": (npy_bytes(IMAGE.astype(np.complex64)), "complex dtype complex64"),
    "string": (npy_bytes(np.array([["a"]])), "non-numeric dtype"),
    "structured": (npy_bytes(np.zeros((2, 2), dtype=[("a", "f4")])), "structured dtype"),
    "zero-byte": (b"", "empty file (0 bytes)"),
    "truncated-data": (npy_bytes(IMAGE)[:-10], "truncated file"),
    "truncated-header": (npy_bytes(IMAGE)[:40], "truncated file"),
    "only-magic": (npy_bytes(IMAGE)[:7], "truncated file"),
    "trailing-bytes": (npy_bytes(IMAGE) + b"\0" * 8, "unexpected bytes"),
    "pickled-object-array": (pickled_npy(IMAGE),
                             "darklens convert-deeplense SRC DST --trust-pickle"),
    "huge-shape": (
        header_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (1000000, 1000000), }")
        + b"\0" * 64,
        "truncated file",
    ),
    "huge-header-length-v2": (
        b"\x93NUMPY\x02\x00" + struct.pack("<I", 2**32 - 1) + b"{" * 50,
        "refusing to parse",
    ),
    "negative-shape": (
        header_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (-4, 4), }"),
        "negative dimension",
    ),
    "garbage-header": (header_bytes("{'descr': nonsense, }"), "corrupt .npy header"),
    "bad-descr": (
        header_bytes("{'descr': '<q9', 'fortran_order': False, 'shape': (2, 2), }"),
        "corrupt .npy header",
    ),
    "not-npy": (b"hello, this is text\n" * 4, "not a .npy file"),
    "bad-version": (b"\x93NUMPY\x09\x00" + b"\0" * 100, "unsupported .npy format version"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_gives_clear_error(tmp_path: Path, case: str) -> None:
    content, cause = BAD_FILES[case]
    path = tmp_path / f"{case}.npy"
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        load_npy(path)
    assert str(path) in str(err.value)
    assert cause in str(err.value)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        load_npy(tmp_path / "nope.npy")
    with pytest.raises(DataError, match="is a directory"):
        load_npy(tmp_path)


def test_header_is_checked_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "huge.npy"
    path.write_bytes(BAD_FILES["huge-shape"][0])
    with pytest.raises(DataError, match=r"\(1000000, 1000000\).*8000000000000 bytes"):
        read_npy_header(path)


def test_pickle_payload_never_runs(tmp_path: Path) -> None:
    """A .npy whose pickle would create a file: refused, and the file never appears."""
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').close()",))

    evil = np.empty(1, dtype=object)
    evil[0] = Payload()
    path = tmp_path / "evil.npy"
    np.save(path, evil, allow_pickle=True)

    with pytest.raises(DataError, match="--trust-pickle") as err:
        load_npy(path)
    assert str(path) in str(err.value)
    assert not marker.exists()

    # Control: the payload is real (numpy with allow_pickle=True would have run it).
    np.load(path, allow_pickle=True)
    assert marker.exists()


# ----------------------------------------------------------------------------- fuzzing


@pytest.fixture(scope="module")
def fuzz_file():
    with tempfile.TemporaryDirectory() as d:
        yield Path(d) / "fuzz.npy"


def _check_safe(path: Path) -> None:
    """load_npy returns a finite float32 (H, W) array or raises DataError, nothing else."""
    try:
        out = load_npy(path)
    except DataError as err:
        assert str(path) in str(err)
        return
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.ndim == 2
    assert np.isfinite(out).all()


FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,  # leave no .hypothesis folder behind
    suppress_health_check=[HealthCheck.too_slow],
)


@FUZZ
@given(st.binary(max_size=400))
def test_fuzz_random_bytes(fuzz_file: Path, content: bytes) -> None:
    fuzz_file.write_bytes(content)
    _check_safe(fuzz_file)


@FUZZ
@given(st.binary(max_size=400))
def test_fuzz_random_bytes_after_magic(fuzz_file: Path, content: bytes) -> None:
    fuzz_file.write_bytes(b"\x93NUMPY" + content)
    _check_safe(fuzz_file)


VALID = [
    npy_bytes(IMAGE[:4, :4]),
    npy_bytes(IMAGE[:3, :5].astype(">f8")),
    npy_bytes(IMAGE[None, :4, :4].astype(np.float16)),
]


@FUZZ
@given(
    base=st.sampled_from(VALID),
    edits=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=6),
    cut=st.one_of(st.none(), st.integers(0, 200)),
    tail=st.binary(max_size=8),
)
def test_fuzz_mutated_valid_files(
    fuzz_file: Path, base: bytes, edits: list, cut: int | None, tail: bytes
) -> None:
    content = bytearray(base)
    for pos, value in edits:
        if pos < len(content):
            content[pos] = value
    if cut is not None:
        content = content[:cut]
    fuzz_file.write_bytes(bytes(content) + tail)
    _check_safe(fuzz_file)
