"""The public Python API of darklens, re-exported as ``darklens.<name>``.

Everything here wraps what the ``darklens`` commands run (the simulator, the data readers,
``train_run``, the scorer, the smooth-lens fitter, the regression trainer, the benchmark), so a
run trained in Python is a run directory the commands read, and the other way round. Arrays go
in and come out as numpy; torch tensors are accepted wherever images are.

Examples:
    >>> import darklens as dl
    >>> d = dl.simulate("demo", 50, seed=0)
    >>> m = dl.create_detector("dcae")
    >>> m.fit(d, epochs=1)  # doctest: +ELLIPSIS
    Detector('dcae', trained, run in ...)
    >>> m.score(d.images[:4]).shape
    (4,)
"""

from darklens.api._arrays import ImagesLike
from darklens.api._benchmark import benchmark
from darklens.api._data import load, simulate
from darklens.api._detector import Detector, create_detector
from darklens.api._fit import fit_smooth_lens
from darklens.api._regressor import Regressor
from darklens.data.lensdata import LensData
from darklens.errors import DarklensError
from darklens.fit.fitter import SmoothFit

__all__ = [
    "DarklensError",
    "Detector",
    "ImagesLike",
    "LensData",
    "Regressor",
    "SmoothFit",
    "benchmark",
    "create_detector",
    "fit_smooth_lens",
    "load",
    "simulate",
]
