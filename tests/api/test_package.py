"""The package root: the public names, lazily; simulate and benchmark stay modules too."""

from __future__ import annotations

import doctest
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import darklens
import darklens.api as api


def test_root_exports_the_api():
    assert sorted(darklens.__all__) == sorted([*api.__all__, "__version__"])
    for name in api.__all__:
        if name not in ("simulate", "benchmark"):
            assert getattr(darklens, name) is getattr(api, name)
    assert set(api.__all__) <= set(dir(darklens))


def test_the_type_stub_declares_the_same_names():
    import ast

    stub = ast.parse((Path(darklens.__file__).parent / "__init__.pyi").read_text())
    names = {a.asname for node in stub.body if isinstance(node, ast.ImportFrom)
             for a in node.names}
    assert names == set(api.__all__)


def test_every_public_piece_has_a_docstring_with_an_example():
    for name in api.__all__:
        obj = getattr(api, name)
        if name in ("ImagesLike", "LensData", "DarklensError", "SmoothFit"):
            continue  # a type alias and types of the layers below, documented where they live
        assert "Examples:" in (inspect.getdoc(obj) or ""), name


def test_import_darklens_loads_neither_torch_nor_the_api():
    code = "import sys, darklens; print('torch' in sys.modules, 'darklens.api' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "False"]


def test_simulate_and_benchmark_are_modules_and_the_api_functions():
    import darklens.simulate.presets as presets  # the package as before
    from darklens.benchmark import BenchmarkSpec

    assert darklens.simulate.presets is presets
    assert darklens.benchmark.BenchmarkSpec is BenchmarkSpec
    data = darklens.simulate("demo", 1, seed=3, n_pix=32)
    assert data.images.shape == (3, 1, 32, 32)
    with pytest.raises(darklens.DarklensError, match="no detectors given"):
        darklens.benchmark([], "unused")


def test_simulate_is_callable_when_imported_before_darklens_is_used():
    code = ("import darklens.simulate.presets, darklens; "
            "print(darklens.simulate('demo', 1, seed=0, n_pix=32).images.shape)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "(3, 1, 32, 32)"


def test_unknown_attribute():
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        darklens.nothing  # noqa: B018


@pytest.mark.slow
def test_docstring_examples_run():
    import darklens.api._benchmark
    import darklens.api._data
    import darklens.api._detector
    import darklens.api._fit
    import darklens.api._regressor

    modules = (api, darklens.api._data, darklens.api._detector, darklens.api._fit,
               darklens.api._regressor, darklens.api._benchmark)
    for module in modules:
        failed, _ = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert failed == 0, module.__name__
