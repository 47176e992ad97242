"""``simulate`` and ``load``: lensing images in memory, as a ``LensData``."""

from __future__ import annotations

import os
from collections.abc import Sequence

from darklens.data.formats import load_dataset
from darklens.data.lensdata import CLASSES, LensData, check_classes
from darklens.errors import DarklensError
from darklens.simulate.presets import get_preset
from darklens.simulate.simulator import simulate_dataset


def simulate(preset: str, n_per_class: int, seed: int = 0, *,
             classes: Sequence[str] = CLASSES, backend: str | None = None,
             **overrides: object) -> LensData:
    """Simulate ``n_per_class`` images of each class of a preset, in memory.

    The same simulator as ``darklens simulate``: image ``i`` of a class is a pure function of
    (preset, seed, class, i), so the same call gives the same images on any machine.

    Args:
        preset: a preset name: ``demo``, ``model-a``, ``model-i``, ``model-ii``, ``model-iii``
            or ``physical`` (docs/presets.md).
        n_per_class: images per class (at least 1).
        seed: the seed every random number of the data set comes from.
        classes: the classes to simulate (default all three: ``no_sub``, ``cdm``, ``vortex``).
        backend: ``auto`` (default), ``eager`` or ``compiled`` rendering.
        **overrides: preset fields to change, as ``darklens simulate --set FIELD=VALUE``
            (e.g. ``noise="none"``, ``n_pix=32``; priors as ``"uniform:0.5:1.5"``).

    Returns:
        The images (N, 1, H, W) float32, labels, per-image metadata and provenance.

    Examples:
        >>> import darklens as dl
        >>> d = dl.simulate("demo", 2, seed=0, n_pix=32)
        >>> d.images.shape, d.class_names
        ((6, 1, 32, 32), ('no_sub', 'cdm', 'vortex'))
    """
    if n_per_class < 1:
        raise DarklensError(f"n_per_class must be at least 1, got {n_per_class}")
    check_classes(classes)
    try:
        spec = get_preset(preset, {k: str(v) for k, v in overrides.items()})
    except (KeyError, ValueError) as err:
        raise DarklensError(f"simulate: {err.args[0] if err.args else err}") from None
    try:
        return simulate_dataset(spec, int(n_per_class), int(seed), classes=tuple(classes),
                                backend=backend)
    except RuntimeError as err:  # e.g. a compiled backend asked for without a compiler
        raise DarklensError(f"simulate: {err}") from None


def load(path: str | os.PathLike[str], classes: Sequence[str] | None = None) -> LensData:
    """Load a data set from disk: HDF5 shards, DeepLense class folders or ``.npy`` images.

    The reader of every ``darklens`` command (``darklens.data.formats.load_dataset``): a
    ``.h5`` shard or a folder of them (as ``darklens simulate`` writes), a DeepLense tree of
    class folders of ``.npy`` files, or bare ``.npy`` images (label -1, unlabelled). Nothing
    is unpickled.

    Args:
        path: a file or folder.
        classes: keep only these classes (each must be present).

    Returns:
        The images, labels, metadata and provenance.

    Raises:
        DataError: the path does not exist, holds nothing usable, or a file in it is bad.

    Examples:
        >>> import darklens as dl
        >>> d = dl.load("data/m2")  # doctest: +SKIP
    """
    return load_dataset(path, classes)
