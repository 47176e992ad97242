"""examples/quickstart.py and examples/quickstart.ipynb: the same cells, and both run.

The notebook is generated from the script (cells split at ``# %%`` lines; ``# %% [markdown]``
cells lose their ``# ``). Regenerate it with ``python tests/api/test_quickstart.py``. Both run
here shrunk (``DARKLENS_QUICKSTART_SMALL=1``: 40 images per class, one epoch): the script as a
subprocess, the notebook through nbclient on an ipykernel.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "quickstart.py"
NOTEBOOK = ROOT / "examples" / "quickstart.ipynb"


def script_cells(text: str) -> list[tuple[str, str]]:
    """(cell type, source) of every ``# %%`` cell of a script."""
    cells: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("# %%"):
            cells.append(("markdown" if "[markdown]" in line else "code", []))
        elif cells:
            cells[-1][1].append(line)
    out = []
    for kind, lines in cells:
        if kind == "markdown":
            lines = [ln[2:] if ln.startswith("# ") else ln.lstrip("#") for ln in lines]
        out.append((kind, "\n".join(lines).strip("\n")))
    return out


def build_notebook(text: str):
    import nbformat

    nb = nbformat.v4.new_notebook()
    for i, (kind, source) in enumerate(script_cells(text)):
        cell = nbformat.v4.new_markdown_cell(source) if kind == "markdown" \
            else nbformat.v4.new_code_cell(source)
        cell["id"] = f"cell-{i}"
        nb.cells.append(cell)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def small_env(tmp_path: Path) -> dict[str, str]:
    return {"DARKLENS_QUICKSTART_SMALL": "1", "DARKLENS_QUICKSTART_OUT": str(tmp_path / "out"),
            "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1", "DARKLENS_SIM_BACKEND": "eager"}


def test_notebook_holds_the_script_cells():
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    got = [(c.cell_type, c.source) for c in nb.cells]
    assert got == script_cells(SCRIPT.read_text()), (
        "examples/quickstart.ipynb is stale: regenerate it with "
        "`python tests/api/test_quickstart.py`")


@pytest.mark.slow
def test_quickstart_script_runs(tmp_path):
    env = {**os.environ, **small_env(tmp_path)}
    done = subprocess.run([sys.executable, str(SCRIPT)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "cdm: AUROC" in done.stdout and "vortex: AUROC" in done.stdout
    for name in ("roc.png", "gallery.png"):
        assert (tmp_path / "out" / name).stat().st_size > 1000


@pytest.mark.slow
def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    for key, value in {**small_env(tmp_path), "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"),
                       "IPYTHONDIR": str(tmp_path / "ipython")}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MPLBACKEND")  # the kernel's own: inline figures
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "cdm: AUROC" in text and "vortex: AUROC" in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 2, "the ROC curve and the gallery are shown inline"
    assert (tmp_path / "out" / "gallery.png").exists()


if __name__ == "__main__":
    import nbformat

    nbformat.write(build_notebook(SCRIPT.read_text()), NOTEBOOK)
    print(f"wrote {NOTEBOOK}")
