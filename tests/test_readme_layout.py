"""README "Layout" is generated from the tree: every folder of src/darklens, tests/ and the
repository, one line each saying what it is for.

Regenerate it with ``python tests/test_readme_layout.py`` (prints the block to paste into the
README). A new folder fails this test until it has its line in ``PURPOSE``.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "darklens"

#: What each folder is for, in one line (src/darklens/<name>, then the repository's own).
PURPOSE = {
    "api": "the public Python API (simulate, load, Detector, ...), re-exported by darklens",
    "data": "images on disk and in memory: formats, safe readers, datasets, fingerprint, targets",
    "simulate": "presets -> parameters -> render (eager physics or compiled) -> observation",
    "fit": "the smooth-lens fitter: Levenberg-Marquardt, initial guesses, residual maps",
    "models": "detectors (a file or package each + registry), the regressor, run files, scoring",
    "train": "the one training loop (fit), train_run, splits, data streams, DDP",
    "evaluate": "metrics, oracle ceilings, regression metrics, population inference",
    "report": "figures and the HTML report of finished runs and benchmarks",
    "commands": "one module per `darklens` sub-command (registered in cli.py)",
    "tests": "pytest, one folder per package of src/darklens (same name); helpers at the top",
    "benchmarks": "speed and quality benchmarks: print a table, write JSON to results/",
    "docs": "architecture, presets, benchmark, infotheoretic, regression, reliability, refit",
    "examples": "the quickstart, as a script and the same as a notebook",
}


def _folders(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir()
                  if p.is_dir() and not p.name.startswith((".", "_")) and p.name != "results"
                  and p.name != "images")


def layout() -> str:
    """The Layout block as the tree has it now."""
    modules = sorted(p.stem for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    lines = ["src/darklens/", f"  {'*.py':<12}{', '.join(modules)} (layers: docs/architecture.md)"]
    for name in _folders(PACKAGE):
        lines.append(f"  {name + '/':<12}{PURPOSE[name]}")
    for top in ("tests", "benchmarks", "docs", "examples"):
        lines.append(f"{top + '/':<14}{PURPOSE[top]}")
        if top == "tests":
            for name in _folders(ROOT / "tests"):
                what = f"tests of src/darklens/{name}/" if (PACKAGE / name).is_dir() \
                    else f"tests of {name}/"
                lines.append(f"  {name + '/':<12}{what}")
    return "\n".join(lines)


def readme_block() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"## Layout\n\n```\n(.*?)\n```", text, re.S)
    assert match, "README.md has no Layout code block"
    return match.group(1)


def test_readme_layout_is_the_tree():
    assert readme_block() == layout(), (
        "README.md Layout is stale: replace its code block with the output of "
        "`python tests/test_readme_layout.py`")


def test_every_folder_has_a_purpose():
    missing = [n for n in _folders(PACKAGE) if n not in PURPOSE]
    assert not missing, f"add a line for {missing} to PURPOSE in {__file__}"


if __name__ == "__main__":
    print(layout())
