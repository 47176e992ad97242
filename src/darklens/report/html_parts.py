"""Small HTML pieces of the report: an inlined figure, a note, a table, a section."""

from __future__ import annotations

import base64
import html
import io
from typing import Any


def figure_uri(fig: Any, dpi: int = 80) -> str:
    """A matplotlib Figure as a ``data:image/png;base64,...`` URI (and close it)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def img(fig: Any, alt: str, dpi: int = 80) -> str:
    return f'<img alt="{html.escape(alt)}" src="{figure_uri(fig, dpi)}">'


def note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def num(v: float | None, digits: int) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{html.escape(title)}</h2>\n{body}\n</section>\n'
