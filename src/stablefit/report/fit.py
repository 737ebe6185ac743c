"""A FitResult as a table: plain text, or rich on a terminal."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from rich.console import Console

    from stablefit.solve.result import FitResult


def _number(value: float, width: int = 12) -> str:
    if not np.isfinite(value):
        return "—".rjust(width)
    return f"{value:>{width}.6g}"


def _p_value(value: float) -> str:
    if not np.isfinite(value):
        return "—".rjust(8)
    return f"{value:>8.3g}" if value >= 1e-4 else "  <1e-04"


def _header_facts(result: FitResult) -> list[str]:
    cert = result.certificate
    return [
        f"target {result.target_name}   n = {result.n_obs}   df = {result.df_resid}",
        f"R² = {result.rsquared:.10g}   residual SD = {result.resid_std:.10g}",
        f"certificate: {cert.digits} trusted digits   condition number {cert.condition_number:.3g} "
        f"(raw {cert.condition_number_raw:.3g})   backward error {cert.backward_error:.2g}   "
        f"{cert.refinement_steps} refinement pass{'es' if cert.refinement_steps != 1 else ''}",
    ]


def render_fit_text(result: FitResult) -> str:
    """The fit as a fixed-width plain-text table with numbered notes."""
    width = max([9, *(len(n) for n in result.feature_names)])
    lines = [*_header_facts(result), ""]
    headings = f"{'coef':>12} {'std err':>12} {'t':>9} {'P>|t|':>8} {'[0.025':>12} {'0.975]':>12}"
    lines.append(f"{'':<{width}} {headings}")
    for name, coef, se, t, p, low, high in result.table():
        lines.append(
            f"{name:<{width}} {_number(coef)} {_number(se)} {_number(t, 9)} {_p_value(p)} "
            f"{_number(low)} {_number(high)}"
        )
    if result.notes:
        lines += ["", "Notes:", *result.notes]
    return "\n".join(lines)


def print_fit(result: FitResult, console: Console) -> None:
    """The fit as a rich table on a console."""
    from rich.table import Table

    for fact in _header_facts(result):
        console.print(fact, highlight=False)
    table = Table(show_edge=False, header_style="bold")
    for column in ("", "coef", "std err", "t", "P>|t|", "[0.025", "0.975]"):
        table.add_column(column, justify="left" if not column else "right")
    for name, coef, se, t, p, low, high in result.table():
        table.add_row(
            name,
            _number(coef).strip(),
            _number(se).strip(),
            _number(t).strip(),
            _p_value(p).strip(),
            _number(low).strip(),
            _number(high).strip(),
        )
    console.print(table)
    for note in result.notes:
        console.print(note, style="yellow", highlight=False)
