"""A Diagnosis as an HTML report: what will happen, where training is stable, and why.

Sections, top-down as in the terminal report: the forecast loss curves (with real Keras
curves when given), the stability map, the findings with their evidence and fixes, the
code to paste, then the data: feature scales against float32's limits, collinearity,
missing and non-finite values, outliers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from stablefit.diagnose.checks.collinearity import VIF_INFO, VIF_WARNING
from stablefit.diagnose.checks.common import plural
from stablefit.diagnose.checks.forecast import OPTIMIZER_NAMES, optimizer_label
from stablefit.diagnose.checks.outliers import ROBUST_Z
from stablefit.diagnose.findings import Diagnosis, Finding
from stablefit.report.diagnosis import fix_snippets, forecast_sentence
from stablefit.report.html import charts
from stablefit.report.html.charts import OUTCOME_COLOURS, LossChart, chart, figure, svg
from stablefit.report.html.page import (
    document,
    fragment,
    navigation,
    number,
    section,
    table,
    text,
)

#: Extreme values drawn on the outlier chart at most (the largest robust z first).
OUTLIER_POINTS = 2000
#: Columns drawn on the per-column charts at most (all of them are in the tables).
CHART_COLUMNS = 60

SECTIONS = (
    ("forecast", "What will happen"),
    ("stability", "Stability map"),
    ("findings", "Findings"),
    ("fix", "Fix"),
    ("scales", "Feature scales"),
    ("collinearity", "Collinearity"),
    ("missing", "Missing values"),
    ("outliers", "Outliers"),
)


def diagnosis_page(
    diagnosis: Diagnosis, *, keras_history: Mapping[str, Sequence[float]] | None = None
) -> str:
    """The whole report as one self-contained HTML document."""
    title = f"stablefit doctor: {diagnosis.facts.origin}"
    return document(title, diagnosis_body(diagnosis, keras_history=keras_history))


def diagnosis_fragment(diagnosis: Diagnosis) -> str:
    """The report as a block for a notebook (``Diagnosis._repr_html_``)."""
    return fragment(diagnosis_body(diagnosis))


def diagnosis_body(
    diagnosis: Diagnosis,
    *,
    keras_history: Mapping[str, Sequence[float]] | None = None,
    heading: str | None = None,
) -> str:
    """The report's sections (for a page of its own, or inside another one)."""
    facts = diagnosis.facts
    parts = [
        f"<h1>{text(heading or 'stablefit doctor: ' + facts.origin)}</h1>",
        f'<p class="facts">{_facts_line(diagnosis)}</p>',
        navigation(SECTIONS),
        section("forecast", "What will happen", _forecast(diagnosis, keras_history or {})),
        section("stability", "Stability map", _stability(diagnosis)),
        section("findings", "Findings", findings_blocks(diagnosis.findings)),
        section("fix", "Fix", _fix(diagnosis)),
        section("scales", "Feature scales", _scales(diagnosis)),
        section("collinearity", "Collinearity", _collinearity(diagnosis)),
        section("missing", "Missing values", _missing(diagnosis)),
        section("outliers", "Outliers", _outliers(diagnosis)),
    ]
    return "".join(parts)


def _facts_line(diagnosis: Diagnosis) -> str:
    facts, settings = diagnosis.facts, diagnosis.settings
    target = f"target <b>{text(facts.target_name)}</b>" if facts.target_name else "no target"
    return (
        f"{plural(facts.n_rows, 'row')} ({facts.n_complete} complete), "
        f"{plural(len(facts.feature_names), 'feature')}, {target}. Forecast for a Keras Dense(1) "
        f"model, mean squared error, {text(settings.get('epochs'))} epochs, batch size "
        f"{text(settings.get('batch_size'))}, {text(settings.get('dtype'))}."
        + (f" {text(facts.left_out_text())}" if facts.left_out else "")
    )


# -- what will happen -----------------------------------------------------------------------


def forecasts_of(diagnosis: Diagnosis) -> list[Any]:
    return [] if diagnosis.training is None else [diagnosis.training, *diagnosis.other_forecasts]


def outcome_text(outcome: str) -> str:
    return f'<span class="outcome-{text(outcome)}">{text(outcome)}</span>'


def forecast_chart(
    diagnosis: Diagnosis, real: Mapping[str, Sequence[float]] | None = None
) -> LossChart:
    """Forecast curves (each setting tried and the recommended one) and real runs."""
    training = diagnosis.training
    plot = LossChart(title="Forecast loss per epoch (dashed) and real runs (solid)")
    momentum = float(diagnosis.settings.get("momentum") or 0.0)
    for forecast in forecasts_of(diagnosis):
        if forecast.loss_history is not None:
            own = forecast is training and momentum
            label = optimizer_label(forecast, momentum=momentum if own else 0.0)
            plot.curves.append(charts.forecast_curve(f"forecast: {label}", forecast.loss_history))
    recommended = getattr(training, "recommended", None)
    if recommended is not None and recommended.loss_history is not None:
        scaling = "" if recommended.scaling == "none" else f"{recommended.scaling}, "
        label = (
            f"recommended: {scaling}{OPTIMIZER_NAMES[recommended.optimizer]} "
            f"lr {number(recommended.learning_rate)}"
        )
        plot.curves.append(charts.forecast_curve(label, recommended.loss_history))
    for label, losses in (real or {}).items():
        plot.curves.append(charts.real_curve(label, losses))
    plot.optimum = None if training is None else training.optimal_loss
    return plot


LOSS_CAPTION = (
    "Log scale. Dashed: the simulated loss (median over the initialization seeds, their range "
    "shaded); an × and a dotted line mark the first epoch whose loss is inf or NaN. Dotted "
    "horizontal: the least-squares optimum, the lowest loss any training can reach."
)


def _forecast(diagnosis: Diagnosis, keras_history: Mapping[str, Sequence[float]]) -> str:
    training = diagnosis.training
    if training is None:
        return (
            "<p>No training forecast: there is no target or no complete row (see the findings).</p>"
        )
    items = "".join(
        f"<li>{outcome_text(f.outcome)}: {text(forecast_sentence(f, diagnosis.settings))}</li>"
        for f in forecasts_of(diagnosis)
    )
    parts = [f"<ul>{items}</ul>"]
    if training.approximation:
        parts.append(f'<p class="note">{text(training.approximation)}</p>')
    real = {f"Keras: {label}": losses for label, losses in keras_history.items()}
    parts.append(chart("loss", forecast_chart(diagnosis, real).draw("loss"), text(LOSS_CAPTION)))
    return "".join(parts)


# -- stability map ------------------------------------------------------------------------


def _stability(diagnosis: Diagnosis) -> str:
    stability = diagnosis.stability_map
    if stability is None:
        return "<p>No stability map: nothing could be simulated (see the findings).</p>"
    rates = stability.learning_rates
    names = [OPTIMIZER_NAMES[o] for o in stability.optimizers]
    with figure(7.5, max(1.8, 0.6 + 0.38 * len(names))) as fig:
        ax = fig.axes[0]
        x = np.tile(rates, len(names))
        y = np.repeat(np.arange(len(names)), len(rates))
        outcomes = [o for row in stability.outcomes for o in row]
        ax.scatter(
            x,
            y,
            c=[OUTCOME_COLOURS[o] for o in outcomes],
            marker="s",
            s=70,
            gid="stability-cells",
            linewidths=0,
        )
        for outcome, colour in OUTCOME_COLOURS.items():
            ax.scatter([], [], c=colour, marker="s", label=outcome)
        row = stability.optimizers.index(stability.chosen_optimizer)
        ax.scatter(
            [stability.chosen_learning_rate],
            [row],
            marker="*",
            s=220,
            facecolor="none",
            edgecolor="#111111",
            linewidths=1.4,
            gid="stability-chosen",
            label="the setting forecast",
        )
        for k, optimizer in enumerate(stability.optimizers):
            bound = stability.bounds.get(optimizer)
            if bound:
                ax.plot(
                    [bound, bound],
                    [k - 0.45, k + 0.45],
                    color="#111111",
                    lw=2,
                    gid=f"stability-bound-{k}",
                )
                ax.annotate(
                    f"stable for lr < {number(bound)}",
                    (bound, k - 0.45),
                    xytext=(3, 0),
                    textcoords="offset points",
                    fontsize=7.5,
                    va="bottom",
                )
        charts.log_scale(ax, "x", ticks=12)
        ax.set_yticks(range(len(names)), names)
        ax.set_ylim(len(names) - 0.5, -0.7)
        ax.set_xlabel("learning rate")
        ax.set_title("Forecast outcome by optimizer and learning rate")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        drawing = svg(fig)
    caption = (
        "Each square is the simulated outcome at that learning rate: red diverges (inf/NaN "
        "or a growing loss), amber stalls (the excess loss stays above 1% of where it "
        "started), green converges. The black bar is the exact stability bound of the "
        "non-adaptive optimizer; the star the setting forecast. The map is for the rows "
        "whose values are all finite (a NaN or inf that training sees diverges anywhere). "
        + stability.note[0].upper()
        + stability.note[1:]
        + "."
    )
    return chart("stability", drawing, text(caption))


# -- findings and fix ------------------------------------------------------------------------


def _evidence_value(value: Any) -> str:
    if isinstance(value, float):
        return text(number(value))
    if isinstance(value, (list, dict)) and value:
        shown = json.dumps(value, ensure_ascii=False)
        if len(shown) > 400:
            shown = shown[:400] + " …"
        return f"<code>{text(shown)}</code>"
    return text(value)


def finding_block(finding: Finding) -> str:
    """One finding: code, severity, title, message, evidence, fix, code to paste."""
    rows = "".join(
        f"<tr><th>{text(key)}</th><td>{_evidence_value(value)}</td></tr>"
        for key, value in finding.evidence.items()
    )
    evidence = f'<table class="evidence">{rows}</table>' if rows else ""
    code = (
        f'<pre class="copy"><code>{text(finding.fix_code)}</code></pre>' if finding.fix_code else ""
    )
    return (
        f'<div class="finding {text(finding.severity)}" data-code="{text(finding.code)}">'
        f"<p><b>{text(finding.code)}</b> "
        f'<span class="severity-{text(finding.severity)}">{text(finding.severity)}</span> '
        f"<b>{text(finding.title)}</b></p>"
        f"<p>{text(finding.message)}</p>{evidence}"
        f"<p><b>Fix:</b> {text(finding.fix)}</p>{code}</div>"
    )


def findings_blocks(findings: Sequence[Finding]) -> str:
    if not findings:
        return "<p>No hazards found in the data.</p>"
    return "".join(finding_block(f) for f in findings)


def _fix(diagnosis: Diagnosis) -> str:
    snippets = fix_snippets(diagnosis)
    recommended = getattr(diagnosis.training, "recommended", None)
    parts = []
    if recommended is not None:
        parts.append(
            f"<p>Recommended: {outcome_text(recommended.outcome)} — {text(recommended.note)}.</p>"
        )
    if not snippets:
        parts.append("<p>Nothing to change.</p>")
    else:
        code = "\n\n".join(snippets)
        parts.append(
            '<p class="note">One click selects the whole block.</p>'
            f'<pre class="copy" id="recommended-code"><code>{text(code)}</code></pre>'
        )
    return "".join(parts)


# -- the data ---------------------------------------------------------------------------------


def _shown_columns(diagnosis: Diagnosis) -> list[Any]:
    return list(diagnosis.columns[:CHART_COLUMNS])


def _more_columns_note(diagnosis: Diagnosis) -> str:
    hidden = len(diagnosis.columns) - CHART_COLUMNS
    if hidden <= 0:
        return ""
    return f" The chart shows the first {CHART_COLUMNS} columns; the table has all of them."


def _scales(diagnosis: Diagnosis) -> str:
    columns = _shown_columns(diagnosis)
    if not columns:
        return "<p>No columns.</p>"
    with figure(7.5, max(2.2, 1.0 + 0.3 * len(columns))) as fig:
        ax = fig.axes[0]
        rows = np.arange(len(columns))
        sd = np.array([c.std for c in columns])
        mean = np.abs([c.mean for c in columns])
        largest = np.array([c.max_abs for c in columns])
        with np.errstate(invalid="ignore"):
            lows = np.fmin(np.where(sd > 0, sd, np.nan), np.where(mean > 0, mean, np.nan))
        for k in rows:
            if np.isfinite(lows[k]) and np.isfinite(largest[k]) and largest[k] > 0:
                ax.plot([lows[k], largest[k]], [k, k], color="#c5cdd6", lw=5, solid_capstyle="butt")
        for values, marker, label, gid in (
            (sd, "D", "standard deviation", "scales-sd"),
            (mean, "o", "|mean|", "scales-mean"),
            (largest, "|", "largest |value|", "scales-max"),
        ):
            shown = np.isfinite(values) & (values > 0)
            ax.scatter(
                values[shown],
                rows[shown],
                marker=marker,
                s=40 if marker == "|" else 22,
                label=label,
                gid=gid,
                zorder=3,
            )
        for limit, label in (
            (charts.FLOAT32_EXACT_INTEGERS, "2²⁴"),
            (math.sqrt(charts.FLOAT32_MAX), "squares inf"),
            (charts.FLOAT32_MAX, "float32 max"),
        ):
            ax.axvline(limit, color="#b3261e", lw=1, ls="--", gid="scales-limit")
            ax.annotate(
                label,
                (limit, 1.0),
                xycoords=("data", "axes fraction"),
                rotation=90,
                xytext=(-3, -2),
                textcoords="offset points",
                va="top",
                ha="right",
                fontsize=7,
                color="#b3261e",
            )
        positive = np.concatenate([v[np.isfinite(v) & (v > 0)] for v in (sd, mean, largest)])
        low = positive.min() / 10 if positive.size else 1e-3
        ax.set_xlim(low, max(charts.FLOAT32_MAX * 30, positive.max(initial=1.0) * 30))
        charts.log_scale(ax, "x", ticks=10)
        ax.set_yticks(rows, [charts.chart_name(c.name) for c in columns])
        ax.set_ylim(len(columns) - 0.5, -0.5)
        ax.set_xlabel("magnitude (log scale)")
        ax.set_title("Scale of each column against float32's limits")
        ax.legend(loc="lower right")
        drawing = svg(fig)
    caption = text(
        "Each column's spread (standard deviation), offset (|mean|) and largest magnitude. "
        "Columns far apart make gradient descent crawl. Dashed, float32's limits: beyond "
        "2²⁴ = 16,777,216 integers are no longer exact, beyond 1.8e19 a square is inf, "
        "beyond 3.4e38 the value itself." + _more_columns_note(diagnosis)
    )
    rows_html = [
        (
            text(c.name),
            text(c.role),
            text(c.count),
            text(number(c.minimum)),
            text(number(c.maximum)),
            text(number(c.mean)),
            text(number(c.std)),
            text(number(c.median)),
            text(number(c.robust_sd)),
            "yes" if c.is_integer else "",
        )
        for c in diagnosis.columns
    ]
    numbers = table(
        [
            "column",
            "role",
            "finite values",
            "min",
            "max",
            "mean",
            "sd",
            "median",
            "robust sd",
            "integers",
        ],
        rows_html,
        numeric=[False, False, True, True, True, True, True, True, True, False],
    )
    return chart("scales", drawing, caption) + numbers


def _vif_text(vif: float) -> str:
    if math.isinf(vif):
        return "∞ (exact)"
    return "—" if math.isnan(vif) else number(vif)


def _collinearity(diagnosis: Diagnosis) -> str:
    features = [c for c in _shown_columns(diagnosis) if c.role == "feature"]
    with_vif = [c for c in features if not math.isnan(c.vif)]
    parts = []
    relations = [f for f in diagnosis.findings if f.code in ("SF112", "SF113", "SF114", "SF115")]
    if relations:
        parts.append("<h3>Relations found</h3>" + "".join(finding_block(f) for f in relations))
    else:
        parts.append("<p>No exact or near linear relation between the features.</p>")
    if len(with_vif) >= 2:
        values = np.array([c.vif for c in with_vif])
        finite_max = values[np.isfinite(values)].max(initial=1.0)
        right = max(finite_max, VIF_WARNING) * 10
        with figure(7.5, max(1.8, 0.9 + 0.28 * len(with_vif))) as fig:
            ax = fig.axes[0]
            shown = np.where(np.isinf(values), right, values)
            colours = [
                "#b3261e" if v >= VIF_WARNING else "#e0a526" if v >= VIF_INFO else "#1f5fa8"
                for v in values
            ]
            bars = ax.barh(np.arange(len(with_vif)), shown, color=colours)
            charts.number_marks(bars, "vif-bar")
            for k, value in enumerate(values):
                if np.isinf(value):
                    ax.annotate(
                        "exact",
                        (right, k),
                        xytext=(-3, 0),
                        textcoords="offset points",
                        ha="right",
                        va="center",
                        fontsize=7.5,
                        color="white",
                    )
            for limit in (VIF_INFO, VIF_WARNING):
                ax.axvline(limit, color="#555555", lw=1, ls="--")
            ax.set_xlim(0.8, right * 1.2)
            charts.log_scale(ax, "x")
            ax.set_yticks(range(len(with_vif)), [charts.chart_name(c.name) for c in with_vif])
            ax.set_ylim(len(with_vif) - 0.5, -0.5)
            ax.set_xlabel("variance inflation factor (log scale)")
            ax.set_title("How much the other features explain each feature")
            drawing = svg(fig)
        caption = text(
            f"VIF = 1/(1 - R²) of each feature on the others: at {VIF_INFO:g} and above its "
            f"weight is poorly determined, at {VIF_WARNING:g} badly; “exact” marks a feature "
            "the others determine exactly." + _more_columns_note(diagnosis)
        )
        parts.append(chart("vif", drawing, caption))
    vif_rows = [
        (text(c.name), text(_vif_text(c.vif))) for c in diagnosis.columns if c.role == "feature"
    ]
    parts.append(table(["feature", "VIF"], vif_rows, numeric=[False, True]))
    return "".join(parts)


def _missing(diagnosis: Diagnosis) -> str:
    bad = [c for c in diagnosis.columns if c.n_nan or c.n_inf]
    if not bad:
        return "<p>No NaN, inf or missing value in any column.</p>"
    label = diagnosis.facts.row_label
    rows = [
        (text(c.name), text(c.role), text(c.n_nan), text(c.n_inf), text(c.nonfinite_rows))
        for c in bad
    ]
    shown = bad[:CHART_COLUMNS]
    with figure(7.5, max(1.8, 0.9 + 0.28 * len(shown))) as fig:
        ax = fig.axes[0]
        positions = np.arange(len(shown))
        nan = np.array([c.n_nan for c in shown])
        inf = np.array([c.n_inf for c in shown])
        charts.number_marks(
            ax.barh(positions, nan, color="#8e44ad", label="NaN or missing"), "missing-nan"
        )
        charts.number_marks(
            ax.barh(positions, inf, left=nan, color="#c0392b", label="inf"), "missing-inf"
        )
        ax.set_yticks(positions, [charts.chart_name(c.name) for c in shown])
        ax.set_ylim(len(shown) - 0.5, -0.5)
        ax.set_xlabel("values")
        ax.set_title("Non-finite values by column")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        drawing = svg(fig)
    caption = text(
        f"Keras trains on every row it is given: one NaN or inf makes the loss NaN from the "
        f"first batch that holds it. The table gives the first {label}s of each column."
    )
    return chart("missing", drawing, caption) + table(
        ["column", "role", "NaN or missing", "inf", f"first {label}s"],
        rows,
        numeric=[False, False, True, True, False],
    )


def _outliers(diagnosis: Diagnosis) -> str:
    label = diagnosis.facts.row_label
    points = []
    for column in diagnosis.columns:
        for value, row, z, leverage in zip(
            column.extreme_values,
            column.extreme_rows,
            column.robust_z,
            column.leverage,
            strict=True,
        ):
            if np.isfinite(z):
                points.append((float(z), float(leverage), column.name, int(row), float(value)))
    if not points:
        return (
            "<p>No robust z-scores: too few rows, no spread around the median, or a summary "
            "without quantile sketches.</p>"
        )
    points.sort(key=lambda p: -p[0])
    plotted = [p for p in points if np.isfinite(p[1])][:OUTLIER_POINTS]
    parts = []
    if plotted:
        names = list(dict.fromkeys(p[2] for p in plotted))
        with figure(7.5, 3.4) as fig:
            ax = fig.axes[0]
            z = np.array([p[0] for p in plotted])
            leverage = np.array([p[1] for p in plotted])
            colour_of = {
                n: charts.SERIES_COLOURS[k % len(charts.SERIES_COLOURS)]
                for k, n in enumerate(names)
            }
            ax.scatter(
                np.maximum(z, 1e-2),
                leverage,
                c=[colour_of[p[2]] for p in plotted],
                s=14,
                gid="outlier-points",
                alpha=0.85,
            )
            for name in names[:12]:
                ax.scatter([], [], c=colour_of[name], s=14, label=charts.chart_name(name))
            ax.axvline(ROBUST_Z, color="#b3261e", lw=1, ls="--")
            ax.annotate(
                f"robust z = {ROBUST_Z:g}",
                (ROBUST_Z, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(3, -2),
                textcoords="offset points",
                va="top",
                fontsize=7.5,
                color="#b3261e",
            )
            for p in [p for p in plotted if p[0] > ROBUST_Z][:5]:
                ax.annotate(
                    f"{label} {p[3]}",
                    (max(p[0], 1e-2), p[1]),
                    xytext=(4, 2),
                    textcoords="offset points",
                    fontsize=7,
                )
            charts.log_scale(ax, "x")
            ax.set_xlabel("robust z-score |x - median| / (1.4826 · MAD)  (log scale)")
            ax.set_ylabel("leverage (one-feature fit)")
            ax.set_title("The most extreme values of each feature")
            if len(names) <= 12:
                ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
            drawing = svg(fig)
        caption = text(
            f"The smallest and largest values of each feature. Right of the dashed line (robust "
            f"z > {ROBUST_Z:g}) a value is an outlier; high up, its row alone pulls the fit "
            "(leverage in the fit on that feature alone, a lower bound for the full model)."
        )
        parts.append(chart("outliers", drawing, caption))
    flagged = [p for p in points if p[0] > ROBUST_Z]
    if flagged:
        rows = [
            (
                text(p[2]),
                text(f"{label} {p[3]}"),
                text(number(p[4])),
                text(number(p[0])),
                text(number(p[1]) if np.isfinite(p[1]) else "—"),
            )
            for p in flagged[:50]
        ]
        parts.append(
            table(
                ["column", "where", "value", "robust z", "leverage ≥"],
                rows,
                numeric=[False, False, True, True, True],
            )
        )
    else:
        parts.append(f"<p>No value has a robust z-score above {ROBUST_Z:g}.</p>")
    return "".join(parts)
