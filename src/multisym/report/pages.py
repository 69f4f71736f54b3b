"""Small self-contained HTML pages (tables for the report; no scripts, no assets)."""

from __future__ import annotations

import html

STYLE = ("body{font-family:sans-serif;margin:1em}table{border-collapse:collapse;margin:0.5em 0}"
         "td,th{border:1px solid #bbb;padding:2px 6px;font-size:13px}th{text-align:left}")


def _text(value) -> str:
    if value is None:
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def table(header: list, rows: list[list], row_headers: bool = False) -> str:
    """An HTML table; with ``row_headers`` the first cell of each row is a header."""
    head = "".join(f"<th>{html.escape(_text(h))}</th>" for h in header)
    body = []
    for row in rows:
        cells = [f"<td>{html.escape(_text(v))}</td>" for v in row]
        if row_headers and cells:
            cells[0] = f"<th>{html.escape(_text(row[0]))}</th>"
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def page(title: str, *parts: str) -> str:
    """A page whose body is the escaped title as a heading, then ``parts`` (HTML)."""
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h3>{html.escape(title)}</h3>{''.join(parts)}</body></html>\n")


def heading(text: str) -> str:
    return f"<h4>{html.escape(text)}</h4>"


def preformatted(text: str) -> str:
    return f"<pre>{html.escape(text)}</pre>"


def paragraph(text: str) -> str:
    return f"<p>{html.escape(text)}</p>"
