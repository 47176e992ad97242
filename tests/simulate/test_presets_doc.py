"""docs/presets.md shows the presets as the code defines them."""

from pathlib import Path

from darklens.simulate.presets import presets_table

DOC = Path(__file__).resolve().parents[2] / "docs" / "presets.md"


def test_presets_doc_table_is_the_code_table():
    assert presets_table() in DOC.read_text(), (
        "docs/presets.md is stale: regenerate its table with "
        "darklens.simulate.presets.presets_table()"
    )
