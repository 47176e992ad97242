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

from darklens import _API_NAMES
from darklens.api._arrays import ImagesLike as ImagesLike
from darklens.api._benchmark import benchmark as benchmark
from darklens.api._data import load as load
from darklens.api._data import simulate as simulate
from darklens.api._detector import Detector as Detector
from darklens.api._detector import create_detector as create_detector
from darklens.api._fit import fit_smooth_lens as fit_smooth_lens
from darklens.api._regressor import Regressor as Regressor
from darklens.data.lensdata import LensData as LensData
from darklens.errors import DarklensError as DarklensError
from darklens.fit.fitter import SmoothFit as SmoothFit

__all__ = list(_API_NAMES)  # one list, in the package root (which must not import this one)
