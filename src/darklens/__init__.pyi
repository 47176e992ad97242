# Types of the package root for type checkers: the public API that __init__.py re-exports
# lazily (tests/api/test_package.py keeps this list equal to darklens.api.__all__, which is
# the package's _API_NAMES).
from darklens.api import DarklensError as DarklensError
from darklens.api import Detector as Detector
from darklens.api import ImagesLike as ImagesLike
from darklens.api import LensData as LensData
from darklens.api import Regressor as Regressor
from darklens.api import SmoothFit as SmoothFit
from darklens.api import benchmark as benchmark
from darklens.api import create_detector as create_detector
from darklens.api import fit_smooth_lens as fit_smooth_lens
from darklens.api import load as load
from darklens.api import simulate as simulate

__version__: str
_API_NAMES: tuple[str, ...]
__all__: list[str]
