"""One HTML page per experiment that shows every figure of its report and the truth table."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._table import COLUMNS

__all__ = ["HTML_NAME", "write_html"]

#: File name of the report page inside the report folder.
HTML_NAME = "report.html"
#: Formats a browser shows inline, in order of preference; others are linked.
_INLINE = (".svg", ".png")
_STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:auto;padding:0 1em}img{max-width:100%}"
)


def write_html(
    out_dir: Path, title: str, figures: Sequence[Path], rows: Sequence[dict[str, Any]] = ()
) -> Path:
    """Write ``report.html`` into ``out_dir``: one section per figure, then the table.

    Parameters
    ----------
    out_dir : Path
        The report folder; figures are referenced by their names relative to it.
    title : str
        Page title (the experiment).
    figures : sequence of Path
        Every figure file written; files of one figure differ only by their extension.
        The page shows the SVG or PNG inline and links every file of the figure.
    rows : sequence of dict, optional
        The recovered-versus-truth table (`report_table`), shown when not empty.

    Returns
    -------
    Path
        The page.
    """
    by_name: dict[str, list[Path]] = {}
    for path in figures:
        by_name.setdefault(path.stem, []).append(path)
    body = [f"<h1>{html.escape(title)}</h1>"]
    body += [_figure(name, paths) for name, paths in by_name.items()]
    if rows:
        body.append(_table(rows))
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
    path = Path(out_dir) / HTML_NAME
    path.write_text(page, encoding="utf-8")
    return path


def _figure(name: str, paths: list[Path]) -> str:
    shown = next((p for ext in _INLINE for p in paths if p.suffix == ext), None)
    image = "" if shown is None else f'<img src="{html.escape(shown.name)}" alt="{name}">'
    links = " ".join(f'<a href="{html.escape(p.name)}">{p.suffix[1:]}</a>' for p in paths)
    caption = f"<figcaption>{html.escape(name)}: {links}</figcaption>"
    return f'<figure id="{html.escape(name)}">{image}{caption}</figure>'


def _table(rows: Sequence[dict[str, Any]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(row[c]))}</td>" for c in COLUMNS) + "</tr>"
        for row in rows
    )
    return f"<h2>Recovered versus truth</h2><table><tr>{head}</tr>{body}</table>"


def _cell(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
