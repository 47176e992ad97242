"""Images in, arrays out: what the public API accepts as images and how it turns them into one
float32 array (N, C, H, W)."""

from __future__ import annotations

from typing import TypeAlias

import numpy as np
import numpy.typing as npt
import torch

from darklens.data.lensdata import CLASSES, LensData
from darklens.errors import DataError

ImagesLike: TypeAlias = npt.ArrayLike | torch.Tensor
"""What the API takes as images: a numpy array (or anything ``numpy.asarray`` takes) or a torch
tensor, shaped (N, C, H, W), (N, H, W) or one image (H, W)."""


def as_images(images: ImagesLike | LensData, what: str = "images") -> npt.NDArray[np.float32]:
    """``images`` as a float32 array (N, C, H, W) (a LensData gives its ``images``).

    (H, W) is one image and (N, H, W) N one-channel images; anything else, or non-numeric
    data, is a one-line ``DataError``.
    """
    if isinstance(images, LensData):
        images = images.images
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    try:
        x = np.asarray(images, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise DataError(f"{what}: not an array of numbers ({err})") from None
    if x.ndim == 2:
        x = x[None, None]
    elif x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise DataError(f"{what}: expected (N, C, H, W), (N, H, W) or (H, W) images, got shape "
                        f"{x.shape}")
    return x


def as_lensdata(data: ImagesLike | LensData, normal: str) -> LensData:
    """``data`` itself if it is a LensData; bare images become a LensData whose every image is
    of the class ``normal`` (what a detector trains on)."""
    if isinstance(data, LensData):
        return data
    images = as_images(data)
    names = CLASSES if normal in CLASSES else (normal,)
    labels = np.full(images.shape[0], names.index(normal), dtype=np.int64)
    return LensData(images=images, labels=labels, class_names=names)
