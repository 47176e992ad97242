"""darklens: find and measure dark-matter substructure in strong gravitational lensing images.

The public API (:mod:`darklens.api`) is re-exported here, lazily: ``import darklens`` loads
neither torch nor the API until a name of it is used, and the modules of the lower layers,
which import ``darklens`` for ``__version__``, stay below the API in the import layers
(pyproject.toml ``[tool.importlinter]``).

Two public names are also modules of the package: ``darklens.simulate`` (the simulator
package) and ``darklens.benchmark`` (the benchmark module). They stay those modules, for every
``import darklens.simulate.presets`` and ``from darklens.benchmark import ...``, and are made
callable: ``darklens.simulate(...)`` is :func:`darklens.api.simulate` and
``darklens.benchmark(...)`` is :func:`darklens.api.benchmark`.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__version__ = "0.1.0"

#: The public API's names, held here once: ``darklens.api.__all__`` is this list, and the
#: package's ``__all__`` adds ``__version__`` (tests/api/test_package.py checks __init__.pyi).
_API_NAMES = (
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
)
__all__ = [*_API_NAMES, "__version__"]

#: Public functions whose names are also modules of this package.
_CALLABLE_MODULES = ("simulate", "benchmark")


def __getattr__(name: str) -> Any:
    """Load a public name on first use (PEP 562)."""
    if name in _CALLABLE_MODULES:
        return importlib.import_module(f"{__name__}.{name}")  # made callable on import
    if name in _API_NAMES:
        value = getattr(importlib.import_module(f"{__name__}.api"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _CallableModule(types.ModuleType):
    """A module of darklens that is also the public function of its name."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        api = importlib.import_module(f"{__name__}.api")
        return getattr(api, self.__name__.rpartition(".")[2])(*args, **kwargs)


class _Package(types.ModuleType):
    """The darklens package: makes ``simulate`` and ``benchmark`` callable as they are
    imported (the import system sets each submodule as an attribute of its package)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _CALLABLE_MODULES and type(value) is types.ModuleType:
            value.__class__ = _CallableModule
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
