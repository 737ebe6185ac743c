"""A FitResult as a table: plain text, rich on a terminal, or HTML."""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from rich.console import Console

    from stablefit.solve.result import FitResult


def _number(value: float, width: int = 12) -> str:
    # An undefined value (a coefficient left out) is a dash; an infinite one (t of an exact
    # fit, a variance beyond float64) is printed as inf: its p-value follows from it.
    if np.isnan(value):
        return "—".rjust(width)
    return f"{value:>{width}.6g}"


def _p_value(value: float) -> str:
    if not np.isfinite(value):
        return "—".rjust(8)
    return f"{value:>8.3g}" if value >= 1e-4 else "  <1e-04"


def _without(result: FitResult) -> str:
    """``without 'b', 'c' and 2 more``: the columns left out as collinear."""
    left_out = ", ".join(repr(d.name) for d in result.dropped[:3])
    more = f" and {len(result.dropped) - 3} more" if len(result.dropped) > 3 else ""
    return f"without {left_out}{more}"


def trusted_digits_text(result: FitResult) -> str:
    """``15 trusted digits``, of the fit without the columns left out as collinear when
    there are any, beside it the coefficients that cannot be told from zero (rounding noise
    where the value is 0: no digit of theirs is significant, so the count is of the others)
    with the bound on each."""
    cert = result.certificate
    without = f" of the fit {_without(result)}" if result.dropped else ""
    if not cert.zeros:
        return f"{cert.digits} trusted digits{without}"
    names = result.param_names
    zeros = [f"{names[i]} zero to within {cert.error_bounds[i]:.1e}" for i in cert.zeros[:3]]
    more = f" and {len(cert.zeros) - 3} more" if len(cert.zeros) > 3 else ""
    return f"{cert.digits_apart_from_zeros} trusted digits{without} ({', '.join(zeros)}{more})"


def _figure(result: FitResult, label: str, name: str, spec: str) -> str:
    """``R² = 0.97``; a NaN never printed as such: ``R² undefined (the target is constant)``."""
    value = getattr(result, name)
    if np.isnan(value):
        return f"{label} undefined ({result.undefined_figures[name]})"
    return f"{label} = {value:{spec}}"


def _header_facts(result: FitResult) -> list[str]:
    cert = result.certificate
    method = "weighted least squares" if result.weights_name else "least squares"
    weights = f" (weights {result.weights_name!r})" if result.weights_name else ""
    statistic = "F" if result.cov_type == "nonrobust" else "Wald F"
    overall = _figure(result, statistic, "fvalue", ".6g")
    if not np.isnan(result.fvalue):
        overall += f" (p = {result.f_pvalue:.3g}"
        if result.f_df_num < result.df_model:
            overall += (
                f"; {result.f_df_num} of {result.df_model} restrictions: the covariance has "
                f"rank {result.f_df_num}"
            )
        overall += ")"
    return [
        f"target {result.target_name}   {method}{weights}   n = {result.n_obs}   "
        f"df model = {result.df_model}   df resid = {result.df_resid}",
        f"{_figure(result, 'R²', 'rsquared', '.10g')}   "
        f"{_figure(result, 'adj. R²', 'rsquared_adj', '.10g')}   "
        f"{_figure(result, 'residual SD', 'resid_std', '.10g')}",
        f"{overall}   "
        f"log-likelihood = {result.llf:.8g}   AIC = {result.aic:.8g}   BIC = {result.bic:.8g}",
        f"covariance: {result.cov_type}"
        + (f" ({', '.join(map(str, result.n_groups))} clusters)" if result.n_groups else "")
        + (f"   t on {result.df_inference} df" if result.use_t else "   z (normal)")
        + f"   cond. no. {result.condition_number:.4g}"
        + (f" {_without(result)}" if result.dropped else ""),
        f"certificate: {trusted_digits_text(result)}   "
        f"condition number {cert.condition_number:.3g} "
        f"(raw {cert.condition_number_raw:.3g})   backward error {cert.backward_error:.2g}   "
        f"{cert.refinement_steps} refinement pass{'es' if cert.refinement_steps != 1 else ''}",
    ]


def _headings(result: FitResult) -> tuple[str, ...]:
    t = "t" if result.use_t else "z"
    return ("", "coef", "std err", t, f"P>|{t}|", "[0.025", "0.975]")


def _cells(result: FitResult) -> list[list[str]]:
    """Per parameter its name and its six figures as printed, without padding."""
    return [
        [
            name,
            *(_number(value).strip() for value in (coef, se, t)),
            _p_value(p).strip(),
            *(_number(value).strip() for value in (low, high)),
        ]
        for name, coef, se, t, p, low, high in result.table()
    ]


def render_fit_text(result: FitResult) -> str:
    """The fit as a fixed-width plain-text table with numbered notes."""
    width = max([9, *(len(n) for n in result.feature_names)])
    lines = [*_header_facts(result), ""]
    t = "t" if result.use_t else "z"
    headings = f"{'coef':>12} {'std err':>12} {t:>9} {f'P>|{t}|':>8} {'[0.025':>12} {'0.975]':>12}"
    lines.append(f"{'':<{width}} {headings}")
    for name, coef, se, t, p, low, high in result.table():
        lines.append(
            f"{name:<{width}} {_number(coef)} {_number(se)} {_number(t, 9)} {_p_value(p)} "
            f"{_number(low)} {_number(high)}"
        )
    if result.notes:
        lines += ["", "Notes:", *result.notes]
    return "\n".join(lines)


#: Narrowest the names' column of the terminal table gets; longer names wrap.
NAME_MIN_WIDTH = 10


def print_fit(result: FitResult, console: Console) -> None:
    """The fit as a rich table on a console (a :class:`~stablefit.report.terminal.PlainConsole`:
    names are text, never markup)."""
    from rich.table import Table

    for fact in _header_facts(result):
        console.print(fact)
    rows = _cells(result)
    headings = _headings(result)
    # A name may wrap (down to NAME_MIN_WIDTH); a number never: split over two lines it
    # reads as two numbers, and cut to "…" it is another number.
    widths = [max(len(h), *(len(row[k]) for row in rows)) for k, h in enumerate(headings)]
    widths[0] = min(widths[0], NAME_MIN_WIDTH)
    if sum(w + 2 for w in widths) + len(widths) - 1 > console.width:
        # Too narrow for a table of whole numbers: a few short lines per parameter.
        for name, coef, se, t, p, low, high in rows:
            console.print(name, style="bold")
            console.print(f"  {headings[1]} {coef}   {headings[2]} {se}")
            console.print(f"  {headings[3]} {t}   {headings[4]} {p}")
            console.print(f"  {headings[5]}, {headings[6]} {low}, {high}")
    else:
        table = Table(show_edge=False, header_style="bold")
        table.add_column(headings[0], overflow="fold", min_width=widths[0])
        for heading in headings[1:]:
            table.add_column(heading, justify="right", no_wrap=True)
        for row in rows:
            table.add_row(*row)
        console.print(table)
    for note in result.notes:
        console.print(note, style="yellow")


class FitSummary:
    """The fit as a document: ``str()`` / ``as_text()`` for a terminal or a file,
    ``as_html()`` for a page (and Jupyter, through ``_repr_html_``), as in statsmodels."""

    def __init__(self, result: FitResult) -> None:
        self.result = result

    def as_text(self) -> str:
        return render_fit_text(self.result)

    def __str__(self) -> str:
        return self.as_text()

    def __repr__(self) -> str:
        return self.as_text()

    def as_html(self) -> str:
        """A self-contained HTML fragment: the facts, the coefficient table, the notes."""
        result = self.result
        facts = "".join(f"<p>{escape(line)}</p>" for line in _header_facts(result))
        head = "".join(f"<th>{escape(c)}</th>" for c in _headings(result))
        body = "".join(
            f"<tr><th>{escape(name)}</th>"
            + "".join(f"<td>{escape(cell)}</td>" for cell in figures)
            + "</tr>"
            for name, *figures in _cells(result)
        )
        notes = "".join(f"<li>{escape(note)}</li>" for note in result.notes)
        return (
            f'<div class="stablefit-fit">{facts}'
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
            + (f"<ol>{notes}</ol>" if notes else "")
            + "</div>"
        )

    def _repr_html_(self) -> str:
        return self.as_html()
