"""Read and write single-image ``.npy`` files without ever running pickle.

``numpy.load`` trusts the file it reads: a header may claim a shape far larger than the file (the
allocation happens before the read fails) and an object array runs pickle. ``load_npy`` parses and
checks the header first (version, header length, dtype, shape, byte count against the file size)
and only then reads exactly the bytes the header promises. Every failure is a ``DataError`` whose
message names the file and the cause.

Accepted: a real floating dtype (float16/32/64, either byte order) of shape (H, W), (1, H, W) or
(H, W, 1) with finite values. Rejected with a clear message: object arrays (pickle; see
``darklens convert-deeplense --trust-pickle``), integer, unsigned, bool, complex, string and
structured dtypes (integer images are treated as a mistake, not silently rescaled), other shapes,
NaN/Inf pixels, zero-byte, truncated or over-long files.
"""

from __future__ import annotations

import os
import struct
import warnings
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from darklens.errors import DataError
from darklens.io import atomic_path

#: The largest image accepted, in pixels (a 8192 x 8192 image); guards against absurd headers.
MAX_PIXELS: int = 8192 * 8192
#: numpy's own limit on header length (characters) for safe loading.
MAX_HEADER_BYTES: int = 10_000

PICKLE_HINT = (
    "it holds a pickled object array, which darklens never unpickles on its own; if you trust "
    "the file (the public DeepLense axion files store [image, mass] this way), convert it with "
    "`darklens convert-deeplense SRC DST --trust-pickle`"
)


def read_npy_header(path: str | os.PathLike) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """Parse and sanity-check a ``.npy`` header without reading the array.

    Returns (shape, fortran_order, dtype, data_offset). Checks that the file holds exactly the
    number of bytes the header promises, so a header claiming a huge array is refused before any
    allocation. The dtype is not judged here (see ``load_npy``), except that its size must be known.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise DataError(f"{path}: is a directory, not a .npy file")
        with open(path, "rb") as fh:
            return _read_header(fh, size, path)
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read file ({err.strerror or err})") from None


def _read_header(fh, size: int, path: Path) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    if size == 0:
        raise DataError(f"{path}: empty file (0 bytes), not a .npy array")
    if size < npy_format.MAGIC_LEN:
        raise DataError(f"{path}: truncated file ({size} bytes), too short for a .npy header")
    try:
        version = npy_format.read_magic(fh)
    except ValueError:
        raise DataError(f"{path}: not a .npy file (the magic string is wrong)") from None
    if version not in ((1, 0), (2, 0), (3, 0)):
        raise DataError(f"{path}: unsupported .npy format version {version[0]}.{version[1]}")
    # Check the header length field against the file size before numpy reads that many bytes.
    len_fmt = "<H" if version == (1, 0) else "<I"
    len_size = struct.calcsize(len_fmt)
    raw = fh.read(len_size)
    if len(raw) != len_size:
        raise DataError(f"{path}: truncated file, the .npy header is cut off")
    (header_len,) = struct.unpack(len_fmt, raw)
    data_offset = npy_format.MAGIC_LEN + len_size + header_len
    if header_len > MAX_HEADER_BYTES:
        raise DataError(
            f"{path}: the .npy header claims to be {header_len} bytes long "
            f"(more than {MAX_HEADER_BYTES}); refusing to parse it"
        )
    if data_offset > size:
        raise DataError(
            f"{path}: truncated file ({size} bytes), shorter than its own header says "
            f"({data_offset} bytes of header)"
        )
    fh.seek(npy_format.MAGIC_LEN)
    try:
        # numpy's parser may warn about odd header text (escapes, Python 2 headers): the checks
        # below decide, so its warnings are noise for the user.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if version == (1, 0):
                shape, fortran, dtype = npy_format.read_array_header_1_0(fh)
            else:
                # 3.0 differs from 2.0 only in the header's text encoding (utf-8, not latin-1);
                # an image header is plain ASCII, so the 2.0 parser reads it the same way.
                shape, fortran, dtype = npy_format.read_array_header_2_0(fh)
    except Exception as err:  # any failure to parse an untrusted header means a bad file
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"{path}: corrupt .npy header ({reason[:200]})") from None
    if any(n < 0 for n in shape):
        raise DataError(f"{path}: corrupt .npy header (negative dimension in shape {shape})")
    if dtype.hasobject:
        return tuple(shape), bool(fortran), dtype, data_offset
    n_items = 1
    for n in shape:
        n_items *= int(n)
    expected = n_items * dtype.itemsize
    available = size - data_offset
    if available < expected:
        raise DataError(
            f"{path}: truncated file: the header promises an array of shape {tuple(shape)} and "
            f"dtype {dtype} ({expected} bytes) but only {available} bytes follow"
        )
    if available > expected:
        raise DataError(
            f"{path}: corrupt file: {available - expected} unexpected bytes after the array of "
            f"shape {tuple(shape)} and dtype {dtype}"
        )
    return tuple(int(n) for n in shape), bool(fortran), dtype, data_offset


def check_image_dtype(dtype: np.dtype, source: str | os.PathLike) -> None:
    """Raise ``DataError`` unless ``dtype`` is a plain real floating type."""
    if dtype.hasobject:
        raise DataError(f"{source}: {PICKLE_HINT}")
    if dtype.fields is not None or dtype.subdtype is not None:
        raise DataError(f"{source}: structured dtype {dtype}; darklens expects a float image")
    if dtype.kind == "f":
        return
    kinds = {"i": "integer", "u": "unsigned integer", "b": "boolean", "c": "complex"}
    what = kinds.get(dtype.kind, "non-numeric")
    raise DataError(
        f"{source}: {what} dtype {dtype.name}; darklens expects float images "
        "(float16/32/64 pixel values)"
    )


def validate_image(array: np.ndarray, source: str | os.PathLike) -> np.ndarray:
    """Check one image array and return it as a C-contiguous float32 (H, W) copy.

    Accepts shapes (H, W), (1, H, W) and (H, W, 1) and a real floating dtype; rejects anything
    else, and any NaN or Inf pixel (also values too large for float32), with ``DataError``.
    """
    array = np.asarray(array)
    check_image_dtype(array.dtype, source)
    shape = array.shape
    if array.ndim == 3 and shape[0] == 1:
        array = array[0]
    elif array.ndim == 3 and shape[2] == 1:
        array = array[:, :, 0]
    elif array.ndim != 2:
        raise DataError(
            f"{source}: wrong shape {shape}; expected one single-channel image "
            "(H, W), (1, H, W) or (H, W, 1)"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise DataError(f"{source}: empty image of shape {shape}")
    if array.size > MAX_PIXELS:
        raise DataError(f"{source}: image of shape {shape} is larger than {MAX_PIXELS} pixels")
    finite = np.isfinite(array)
    if not finite.all():
        n_nan = int(np.isnan(array).sum())
        n_inf = int(array.size - finite.sum()) - n_nan
        raise DataError(f"{source}: {n_nan} NaN and {n_inf} Inf pixel values")
    with np.errstate(over="ignore"):  # overflow becomes Inf, reported just below
        out = np.array(array, dtype=np.float32, order="C")
    if not np.isfinite(out).all():
        raise DataError(f"{source}: pixel values too large for float32 (|x| > 3.4e38)")
    return out


def load_npy(path: str | os.PathLike) -> np.ndarray:
    """Load one image from a ``.npy`` file safely; return float32 (H, W).

    Never unpickles. Raises ``DataError`` (naming the file and the cause) for anything that is not
    a finite, real floating, single-channel image; see the module docstring for the rules.
    """
    path = Path(path)
    shape, fortran, dtype, offset = read_npy_header(path)
    check_image_dtype(dtype, path)
    if len(shape) not in (2, 3):
        raise DataError(
            f"{path}: wrong shape {shape}; expected one single-channel image "
            "(H, W), (1, H, W) or (H, W, 1)"
        )
    n_items = 1
    for n in shape:
        n_items *= n
    if n_items > MAX_PIXELS:
        raise DataError(f"{path}: image of shape {shape} is larger than {MAX_PIXELS} pixels")
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            buf = fh.read(n_items * dtype.itemsize)
    except OSError as err:
        raise DataError(f"{path}: cannot read file ({err.strerror or err})") from None
    if len(buf) != n_items * dtype.itemsize:  # the file changed under us
        raise DataError(f"{path}: truncated file (changed while reading)")
    array = np.frombuffer(buf, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    return validate_image(array, path)


def save_npy(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write one image as a plain (never pickled) ``.npy`` file, atomically. Returns the path."""
    path = Path(path)
    image = np.asarray(image)
    if image.dtype.hasobject:
        raise ValueError("refusing to write an object array (it would need pickle)")
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, image, allow_pickle=False)
    return path
