"""The simulator's backend policy: which path renders, compiled or eager, and what took it.

The request is ``backend=`` (an argument, or ``darklens simulate --backend``), else
``$DARKLENS_SIM_BACKEND``, else ``auto``: compiled where inductor finds a C++ compiler, else
eager; ``eager``; or ``compiled`` (an error where it cannot compile). Under ``auto`` a job of
fewer than ``AUTO_MIN_IMAGES`` images renders eager (compiling would not repay itself). float64
renders always run eager. If compiling fails, ``auto`` warns once and renders eager from then
on in this process. ``usage`` counts the images each path rendered, for the provenance that
every data set records (``simulator_backend``).

The kernels themselves are in :mod:`darklens.simulate.compiled` (compiled) and
:mod:`darklens.simulate.render` / :mod:`darklens.simulate.observation` (eager); callers hand
both to :func:`dispatch`.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections import Counter
from collections.abc import Callable

from torch import Tensor

ENV_VAR = "DARKLENS_SIM_BACKEND"
BACKENDS = ("auto", "eager", "compiled")

_state: dict = {"probe": None, "error": None}
usage: Counter = Counter()  # images rendered per path in this process (for provenance)


def requested_backend(backend: str | None = None) -> str:
    """The requested path: ``backend`` if given, else ``$DARKLENS_SIM_BACKEND``, else auto."""
    name = (backend or os.environ.get(ENV_VAR) or "auto").strip().lower()
    if name not in BACKENDS:
        raise ValueError(f"simulator backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    return name


# Compiling costs 10-20 s per process (cold cache) and saves ~0.3 ms an image at 64x64 on one
# core (benchmarks/simulate.py), so under ``auto`` a job smaller than this renders eager.
AUTO_MIN_IMAGES = 20_000


def backend_for_job(backend: str | None, n_images: int) -> str | None:
    """``eager`` for a job of fewer than ``AUTO_MIN_IMAGES`` images under ``auto``, else
    ``backend`` unchanged (an explicit choice, or the environment's, always wins)."""
    if requested_backend(backend) == "auto" and n_images < AUTO_MIN_IMAGES:
        return "eager"
    return backend


def resolve_backend(backend: str | None = None) -> str:
    """``compiled`` or ``eager``: the path a float32 render takes under this request."""
    name = requested_backend(backend)
    if name == "eager":
        return "eager"
    if compiled_available():
        return "compiled"
    if name == "compiled":
        raise RuntimeError(
            f"the compiled simulator is unavailable here ({_state['error']}); "
            f"set {ENV_VAR}=eager or auto"
        )
    return "eager"


def compiled_available() -> bool:
    """Whether the compiled path can be tried here: inductor imports and finds a C++ compiler.

    A cheap check (no compiling); a compiler that is found but fails makes the first render
    fall back to eager (see :func:`dispatch`).
    """
    if _state["probe"] is None:
        try:
            from torch._inductor import config as inductor_config

            cxx = inductor_config.cpp.cxx[-1] or "g++"
            _state["probe"] = shutil.which(cxx) is not None
            if not _state["probe"]:
                _state["error"] = f"no C++ compiler ({cxx}) on the PATH"
        except Exception as exc:  # inductor missing or broken: not available
            _state["probe"] = False
            _state["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    return bool(_state["probe"])


def disable(reason: str) -> None:
    """Stop using the compiled path in this process (after a failure), with one warning."""
    _state["probe"], _state["error"] = False, reason
    warnings.warn(f"compiled simulator disabled, rendering eager: {reason}", stacklevel=4)


def dispatch(
    backend: str | None,
    n_images: int,
    compiled_fn: Callable[[], Tensor],
    eager_fn: Callable[[], Tensor],
    eligible: bool = True,
) -> Tensor:
    """``compiled_fn()`` where the request resolves to the compiled path, else ``eager_fn()``.

    ``eligible`` False (a float64 render, an empty batch) always runs eager. If the compiled
    path fails, ``auto`` disables it for the process and runs eager; an explicit ``compiled``
    request raises. ``usage`` counts the images each path handled.
    """
    if eligible and n_images > 0 and resolve_backend(backend) == "compiled":
        try:
            out = compiled_fn()
            usage["compiled"] += n_images
            return out
        except Exception as exc:
            if requested_backend(backend) == "compiled":
                raise
            disable(f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")
    usage["eager"] += n_images
    return eager_fn()


def paths_since(before: Counter) -> str:
    """Which paths handled images since the snapshot ``before`` of ``usage``: ``compiled``,
    ``eager``, ``compiled+eager`` (mixed, after a failure) or ``none``."""
    used = sorted(k for k in ("compiled", "eager") if usage[k] > before.get(k, 0))
    return "+".join(used) or "none"
