"""A FitResult as an HTML report: the summary's numbers, the coefficients' intervals, the
certificate, and the residuals of a sample of the rows.

The table is the one ``result.summary()`` prints (the same numbers); the plots are a
forest plot of the 95% intervals (each coefficient on its own scale, since features rarely
share units), the trusted digits per coefficient, residuals against fitted values, a
normal Q–Q plot and leverage against standardized residuals with Cook's distance.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from stablefit.report.fit import trusted_digits_text
from stablefit.report.html import charts
from stablefit.report.html.charts import chart, figure, svg
from stablefit.report.html.page import (
    document,
    fragment,
    navigation,
    number,
    section,
    table,
    text,
)
from stablefit.solve.certificate import MAX_DIGITS
from stablefit.solve.linalg import special
from stablefit.solve.result import FitResult

#: Coefficients drawn in the forest plot at most (the table has all of them).
FOREST_ROWS = 30
COOK_LEVELS = (0.5, 1.0)
SECTIONS = (
    ("summary", "Coefficients"),
    ("certificate", "Certificate"),
    ("residuals", "Residuals"),
)


def fit_page(result: FitResult, *, origin: str | None = None) -> str:
    """The whole report as one self-contained HTML document."""
    title = f"stablefit fit: {origin or result.target_name}"
    return document(title, fit_body(result, origin=origin))


def fit_fragment(result: FitResult) -> str:
    """The report as a block for a notebook (``FitResult._repr_html_``)."""
    return fragment(fit_body(result))


def fit_body(result: FitResult, *, origin: str | None = None, heading: str | None = None) -> str:
    """The report's sections (for a page of its own, or inside another one)."""
    features = ", ".join(result.feature_names[:8]) + (" …" if len(result.feature_names) > 8 else "")
    title = heading or f"stablefit fit: {result.target_name} on {features}"
    facts = f"{result.n_obs} rows" + (f" of {origin}" if origin else "")
    return "".join(
        [
            f"<h1>{text(title)}</h1>",
            f'<p class="facts">{text(facts)}</p>',
            navigation(SECTIONS),
            section("summary", "Coefficients", result.summary().as_html() + _forest(result)),
            section("certificate", "Certificate", _certificate(result)),
            section("residuals", "Residuals", _residuals(result)),
        ]
    )


def _ticks_for(low: float, high: float) -> Any:
    """Tick labels with the digits that tell ticks between ``low`` and ``high`` apart."""
    from matplotlib import ticker

    size = max(abs(low), abs(high))
    digits = (
        3 if high <= low or size == 0 else max(3, 2 + math.ceil(math.log10(size / (high - low))))
    )
    return ticker.FuncFormatter(lambda value, _: f"{value:.{min(digits, 17)}g}")


def _forest(result: FitResult) -> str:
    rows = result.table()[:FOREST_ROWS]
    if not rows:
        return ""
    from matplotlib import ticker

    with figure(7.5, 0.6 + 0.42 * len(rows), nrows=len(rows), ncols=1, squeeze=False) as fig:
        for k, (name, coef, _, _, _, low, high) in enumerate(rows):
            ax = fig.axes[k]
            ax.set_yticks([])
            ax.spines["left"].set_visible(False)
            ax.set_ylabel(charts.chart_name(name), rotation=0, ha="right", va="center")
            if not (math.isfinite(low) and math.isfinite(high)):
                ax.set_xticks([])
                ax.annotate(
                    "no interval (left out, or no residual degrees of freedom)",
                    (0.5, 0.5),
                    xycoords="axes fraction",
                    ha="center",
                    va="center",
                    fontsize=7.5,
                    color="#6a737d",
                )
                continue
            ax.plot(
                [low, high],
                [0, 0],
                color="#1f5fa8",
                lw=2.5,
                solid_capstyle="butt",
                gid=f"forest-ci-{k}",
            )
            ax.plot([coef], [0], "o", color="#111111", ms=4)
            span = max(high - low, abs(coef) * 1e-12, 1e-300)
            left, right = low - 0.25 * span, high + 0.25 * span
            if left <= 0 <= right or abs(min(low, high)) < 3 * span:
                left, right = min(left, -0.1 * span), max(right, 0.1 * span)
                ax.axvline(0, color="#b3261e", lw=0.8, ls="--")
            ax.set_xlim(left, right)
            ax.xaxis.set_major_locator(ticker.MaxNLocator(4))
            ax.xaxis.set_major_formatter(_ticks_for(left, right))
            ax.tick_params(axis="x", labelsize=7)
        fig.axes[0].set_title("95% confidence intervals (each coefficient on its own scale)")
        drawing = svg(fig)
    hidden = len(result.table()) - len(rows)
    caption = (
        "Each row: the estimate (dot) and its 95% interval (bar); the dashed line is 0 where "
        "it is in reach. Rows have their own scales because features have their own units."
        + (f" The first {FOREST_ROWS} of {len(result.table())} parameters." if hidden else "")
    )
    return chart("forest", drawing, text(caption))


def _certificate(result: FitResult) -> str:
    cert = result.certificate
    names = (["intercept"] if result.has_intercept else []) + list(result.feature_names)
    digits = np.array(cert.digits_per_coef, dtype=float)
    facts = table(
        ["", ""],
        [
            ("trusted digits (every coefficient)", text(trusted_digits_text(result))),
            ("condition number (centered, scaled)", text(number(cert.condition_number))),
            ("condition number of the data as given", text(number(cert.condition_number_raw))),
            ("backward error", text(number(cert.backward_error))),
            ("refinement passes", text(cert.refinement_steps)),
            ("converged to double-double level", "yes" if cert.converged else "no"),
        ],
        numeric=[False, True],
    )
    shown = names[:FOREST_ROWS]
    with figure(7.5, max(1.6, 0.7 + 0.26 * len(shown))) as fig:
        ax = fig.axes[0]
        bars = ax.barh(np.arange(len(shown)), digits[: len(shown)], color="#2e9e4f")
        charts.number_marks(bars, "digits-bar")
        ax.axvline(cert.digits_apart_from_zeros, color="#111111", lw=1, ls="--")
        ax.set_xlim(0, MAX_DIGITS + 0.5)
        ax.set_yticks(range(len(shown)), [charts.chart_name(name) for name in shown])
        ax.set_ylim(len(shown) - 0.5, -0.5)
        ax.set_xlabel("significant digits that can be trusted")
        ax.set_title("Certificate: trusted digits per coefficient")
        drawing = svg(fig)
    caption = text(
        "Digits of each coefficient that are correct for the data as given, never overstated "
        f"(at most {MAX_DIGITS}); 0 for a feature left out or a coefficient that cannot be told "
        "from zero. The dashed line is the least of the others."
    )
    return facts + chart("digits", drawing, caption)


def _residuals(result: FitResult) -> str:
    sample = result.residual_sample
    if sample is None or sample.rows.size == 0:
        return "<p>No residuals: this fit kept no sample of its rows.</p>"
    standardized = sample.standardized
    ok = np.isfinite(standardized) & np.isfinite(sample.fitted)
    parts = [
        f'<p class="note">{text(_sample_note(result, sample))}</p>',
        _residuals_vs_fitted(sample),
    ]
    if ok.sum() >= 3 and not _exact(result):
        parts.append(_qq(standardized[ok]))
        parts.append(_leverage(sample, ok))
    elif not _exact(result):
        parts.append(
            "<p>No standardized residuals: the fit has no residual degrees of freedom.</p>"
        )
    return "".join(parts)


def _sample_note(result: FitResult, sample: Any) -> str:
    n = sample.rows.size
    whole = "all" if n == sample.n_obs else f"{n} of the {sample.n_obs}"
    note = f"The plots show {whole} rows of the fit"
    note += "." if n == sample.n_obs else ", evenly spread over the data."
    if _exact(result):
        note += (
            " The fit is exact: the residuals are rounding noise, so there is no Q–Q or "
            "leverage plot."
        )
    return note


def _exact(result: FitResult) -> bool:
    return result.sst > 0 and result.sse <= 1e-24 * result.sst


def _residuals_vs_fitted(sample: Any) -> str:
    with figure(7.5, 2.8) as fig:
        ax = fig.axes[0]
        ax.scatter(
            sample.fitted,
            sample.resid,
            s=8,
            color="#1f5fa8",
            alpha=0.7,
            gid="residuals-points",
            linewidths=0,
        )
        ax.axhline(0, color="#b3261e", lw=0.8, ls="--")
        ax.set_xlabel("fitted value")
        ax.set_ylabel("residual")
        ax.set_title("Residuals against fitted values")
        drawing = svg(fig)
    caption = (
        "A pattern (a curve, a funnel) means the linear model misses structure, or the noise "
        "is not constant."
    )
    return chart("residuals", drawing, text(caption))


def _qq(standardized: np.ndarray) -> str:
    ordered = np.sort(standardized)
    m = ordered.size
    theoretical = special().ndtri((np.arange(1, m + 1) - 0.5) / m)
    with figure(7.5, 2.8) as fig:
        ax = fig.axes[0]
        ax.scatter(
            theoretical, ordered, s=8, color="#1f5fa8", alpha=0.7, gid="qq-points", linewidths=0
        )
        reach = [theoretical[0], theoretical[-1]]
        ax.plot(reach, reach, color="#b3261e", lw=0.8, ls="--")
        ax.set_xlabel("normal quantile")
        ax.set_ylabel("standardized residual")
        ax.set_title("Normal Q–Q plot")
        drawing = svg(fig)
    caption = (
        "Points on the line: normal residuals. Tails above and below it: heavier tails (outliers)."
    )
    return chart("qq", drawing, text(caption))


def _leverage(sample: Any, ok: np.ndarray) -> str:
    leverage, standardized = sample.leverage[ok], sample.standardized[ok]
    cooks = sample.cooks_distance[ok]
    rows = sample.rows[ok]
    with figure(7.5, 3.0) as fig:
        ax = fig.axes[0]
        level = np.digitize(np.nan_to_num(cooks), COOK_LEVELS)
        colours = np.array(["#1f5fa8", "#e0a526", "#c0392b"])
        ax.scatter(
            leverage, standardized, c=colours[level], s=10, gid="leverage-points", linewidths=0
        )
        for colour, label in zip(colours, ("Cook's D < 0.5", "0.5 – 1", "> 1"), strict=True):
            ax.scatter([], [], c=colour, s=10, label=label)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        h = np.linspace(
            max(leverage.min(), 1e-6), min(max(leverage.max() * 1.05, 1e-3), 0.999), 200
        )
        for distance in COOK_LEVELS:
            bound = np.sqrt(distance * sample.n_params * (1 - h) / h)
            for sign in (1, -1):
                ax.plot(h, sign * bound, color="#b3261e", lw=0.8, ls=":")
            ax.annotate(f"D = {distance:g}", (h[-1], bound[-1]), fontsize=7, color="#b3261e")
        top = np.argsort(-np.nan_to_num(cooks))[:3]
        for k in top:
            ax.annotate(
                f"{sample.row_label} {rows[k]}",
                (leverage[k], standardized[k]),
                xytext=(4, 2),
                textcoords="offset points",
                fontsize=7,
            )
        limit = max(4.0, float(np.abs(standardized).max()) * 1.1)
        ax.set_ylim(-limit, limit)
        ax.set_xlabel("leverage")
        ax.set_ylabel("standardized residual")
        ax.set_title("Leverage against standardized residuals")
        drawing = svg(fig)
    caption = (
        "Rows far right pull the fit toward themselves; far up or down, the fit misses them. "
        "Beyond the dotted curves (Cook's distance 0.5 and 1) a row alone moves the "
        "coefficients noticeably; the three largest are labelled."
    )
    return chart("leverage", drawing, text(caption))
