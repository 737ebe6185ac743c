"""The page every HTML report shares: one self-contained file, no script, no request.

Everything a report shows is inline: the style sheet below, the charts as SVG
(:mod:`stablefit.report.html.charts`), the numbers as tables. Every string that comes
from the user's data — file and column names, values, messages that quote them — goes
through :func:`text`, so markup in a column name shows as text and runs nothing. The
fonts are the reader's own (a system font stack): nothing is fetched.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from typing import Any

from stablefit import __version__
from stablefit.diagnose.findings import format_number

STYLE = """
.stablefit-report { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue",
  Arial, sans-serif; color: #1d232b; line-height: 1.45; max-width: 1100px; margin: 0 auto;
  padding: 0 1rem 2rem; font-size: 15px; }
.stablefit-report h1 { font-size: 1.5rem; margin: 1.2rem 0 0.3rem; }
.stablefit-report h2 { font-size: 1.2rem; margin: 2rem 0 0.5rem; padding-bottom: 0.2rem;
  border-bottom: 1px solid #d5dbe2; }
.stablefit-report h3 { font-size: 1rem; margin: 1.2rem 0 0.3rem; }
.stablefit-report .facts { color: #47515d; margin: 0.2rem 0; }
.stablefit-report nav { font-size: 0.9rem; margin: 0.6rem 0 1rem; }
.stablefit-report nav a { margin-right: 1rem; color: #1f5fa8; }
.stablefit-report figure { margin: 0.8rem 0 1.2rem; break-inside: avoid; }
.stablefit-report figure svg { width: 100%; height: auto; display: block; }
.stablefit-report figcaption { font-size: 0.85rem; color: #47515d; margin-top: 0.3rem; }
.stablefit-report table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.88rem; }
.stablefit-report th, .stablefit-report td { padding: 0.25rem 0.6rem; text-align: left;
  vertical-align: top; border-bottom: 1px solid #e3e7ec; }
.stablefit-report td.num, .stablefit-report th.num { text-align: right;
  font-variant-numeric: tabular-nums; white-space: nowrap; }
.stablefit-report thead th { border-bottom: 2px solid #b9c2cc; }
.stablefit-report .outcome-diverges, .stablefit-report .severity-error { color: #b3261e;
  font-weight: 600; }
.stablefit-report .outcome-stalls, .stablefit-report .severity-warning { color: #9a6700;
  font-weight: 600; }
.stablefit-report .outcome-converges { color: #1a7f37; font-weight: 600; }
.stablefit-report .severity-info { color: #1f5fa8; font-weight: 600; }
.stablefit-report .finding { border-left: 4px solid #b9c2cc; padding: 0.2rem 0 0.2rem 0.8rem;
  margin: 0.8rem 0; break-inside: avoid; }
.stablefit-report .finding.error { border-color: #b3261e; }
.stablefit-report .finding.warning { border-color: #d4a72c; }
.stablefit-report .finding.info { border-color: #6e9bd1; }
.stablefit-report .finding p { margin: 0.25rem 0; }
.stablefit-report .evidence { font-size: 0.82rem; color: #47515d; }
.stablefit-report .evidence td, .stablefit-report .evidence th { padding: 0.1rem 0.5rem;
  border: none; }
.stablefit-report pre { background: #f4f6f8; border: 1px solid #dde2e7; padding: 0.6rem 0.8rem;
  overflow-x: auto; font-size: 0.85rem; white-space: pre-wrap; }
.stablefit-report pre.copy { user-select: all; }
.stablefit-report code { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas,
  "DejaVu Sans Mono", monospace; }
.stablefit-report .note { color: #47515d; font-size: 0.88rem; }
.stablefit-report footer { margin-top: 2rem; color: #6a737d; font-size: 0.8rem; }
@media print {
  .stablefit-report { max-width: none; font-size: 11pt; padding: 0; }
  .stablefit-report nav { display: none; }
  .stablefit-report h2 { break-after: avoid; }
  .stablefit-report pre { white-space: pre-wrap; }
}
"""


#: The page's content security policy: inline style only; no script, font, image or request.
POLICY = "default-src 'none'; style-src 'unsafe-inline'"


def text(value: Any) -> str:
    """Any value as HTML text: escaped, quotes included."""
    return html.escape(str(value), quote=True)


def number(value: float | None, digits: int = 3) -> str:
    """A number as the text reports print it (``—`` for None)."""
    if value is None:
        return "—"
    return format_number(value, digits)


def precise(value: float | None) -> str:
    """A number with the digits a results table shows (``%.6g``; ``—`` when not finite)."""
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:.6g}"


def table(
    headings: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    numeric: Sequence[bool] | None = None,
    css_class: str = "",
) -> str:
    """A table from already-escaped cell HTML; ``numeric`` right-aligns columns."""
    numeric = numeric or [False] * len(headings)
    align = [' class="num"' if flag else "" for flag in numeric]
    head = "".join(f"<th{a}>{h}</th>" for h, a in zip(headings, align, strict=True))
    body = "".join(
        "<tr>"
        + "".join(f"<td{a}>{cell}</td>" for cell, a in zip(row, align, strict=True))
        + "</tr>"
        for row in rows
    )
    attribute = f' class="{css_class}"' if css_class else ""
    return f"<table{attribute}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def section(anchor: str, title: str, body: str) -> str:
    """A report section with a heading the navigation links to (``title`` is escaped)."""
    return f'<section id="{anchor}"><h2>{text(title)}</h2>{body}</section>'


def navigation(sections: Sequence[tuple[str, str]]) -> str:
    links = "".join(f'<a href="#{anchor}">{text(title)}</a>' for anchor, title in sections)
    return f"<nav>{links}</nav>"


def fragment(body: str) -> str:
    """The report as a block for a notebook cell: its own style sheet, scoped to it."""
    return f'<div class="stablefit-report"><style>{STYLE}</style>{body}</div>'


def document(title: str, body: str) -> str:
    """A whole HTML page holding the report; nothing in it loads anything."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        # Nothing may load or run, whatever a string in the data holds.
        f'<meta http-equiv="Content-Security-Policy" content="{POLICY}">'
        f"<title>{text(title)}</title></head><body>"
        + fragment(body + f"<footer>stablefit {text(__version__)}</footer>")
        + "</body></html>\n"
    )
