"""The import layers of pyproject.toml's import-linter contract hold, and a reversed import
breaks them: lint-imports runs on a copy of the package with one import turned upside down."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).parent / "lint-imports"

pytestmark = pytest.mark.skipif(not LINT.exists(),
                                reason="needs import-linter (pip install -e '.[dev]')")


def _lint(root: Path) -> subprocess.CompletedProcess:
    """lint-imports with ``root``'s pyproject.toml on ``root/src/darklens``."""
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    return subprocess.run([str(LINT), "--no-cache"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=120)


def _copy(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "src" / "darklens", tmp_path / "src" / "darklens",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_package_keeps_its_layers():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(("module", "reversed_import", "broken"), [
    # a lower layer importing a higher one
    ("data/lensdata.py", "from darklens.train import loop",
     "darklens.data.lensdata -> darklens.train.loop"),
    # one part of a layer importing its independent sibling ("train | evaluate")
    ("evaluate/metrics.py", "from darklens.train.loop import fit",
     "darklens.evaluate.metrics -> darklens.train.loop"),
])
def test_a_reversed_import_breaks_the_contract(tmp_path, module, reversed_import, broken):
    root = _copy(tmp_path)
    path = root / "src" / "darklens" / module
    path.write_text(path.read_text() + f"\n{reversed_import}  # reversed on purpose\n")
    result = _lint(root)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "0 kept, 1 broken" in result.stdout
    assert broken in result.stdout


def test_a_new_subpackage_must_be_given_a_layer(tmp_path):
    root = _copy(tmp_path)
    (root / "src" / "darklens" / "extra").mkdir()
    (root / "src" / "darklens" / "extra" / "__init__.py").write_text("")
    result = _lint(root)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "darklens.extra" in result.stdout and "not listed as layers" in result.stdout
