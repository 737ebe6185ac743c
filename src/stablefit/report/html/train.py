"""A training run as an HTML report: the real loss curve with the guard's events on it,
what each event was, why and what was done, the forecast beside it, and the coefficients
trained against the exact ones.
"""

from __future__ import annotations

import math
from typing import Any

from stablefit.report.diagnosis import forecast_sentence
from stablefit.report.html import charts
from stablefit.report.html.charts import Marker, chart
from stablefit.report.html.doctor import (
    LOSS_CAPTION,
    findings_blocks,
    forecast_chart,
    forecasts_of,
    outcome_text,
)
from stablefit.report.html.page import document, navigation, number, precise, section, table, text
from stablefit.report.training import TrainingRecord, describe_event, event_epoch, event_fields

SECTIONS = (
    ("loss", "Loss"),
    ("events", "Guard events"),
    ("coefficients", "Coefficients"),
    ("forecast", "Forecast"),
)
# Shown in their own columns (or the "where" column); every other field goes to "details".
_OWN_COLUMNS = ("epoch", "batch", "count", "cause", "action", "message", "fix")


def training_page(record: TrainingRecord) -> str:
    """The whole report as one self-contained HTML document."""
    return document(f"stablefit train: {record.origin}", training_body(record))


def training_body(record: TrainingRecord) -> str:
    settings = record.settings
    if record.stopped is not None:
        verdict = (
            "<p><b>The guard stopped training.</b></p>"
            f'<pre class="note">{text(record.stopped)}</pre>'
        )
    elif math.isfinite(record.final_loss):
        verdict = "<p><b>Training ended with finite weights and loss.</b></p>"
    else:
        verdict = "<p><b>Training did not end with finite weights and loss.</b></p>"
    facts = (
        f"{record.settings.get('rows', '?')} rows. "
        + ", ".join(f"{key} {value}" for key, value in settings.items() if key != "rows")
        + f". NanGuard {'on' if record.guard else 'off'}."
    )
    return "".join(
        [
            f"<h1>{text('stablefit train: ' + record.origin)}</h1>",
            f'<p class="facts">{text(facts)}</p>',
            verdict,
            navigation(SECTIONS),
            section("loss", "Loss", _loss(record)),
            section("events", "Guard events", _events(record)),
            section("coefficients", "Coefficients", _coefficients(record)),
            section("forecast", "Forecast", _forecast(record)),
        ]
    )


def _loss(record: TrainingRecord) -> str:
    label = f"Keras: {record.settings.get('optimizer', '')} (real run)"
    if record.diagnosis is not None:
        plot = forecast_chart(record.diagnosis, {label: record.losses})
    else:
        plot = charts.LossChart(curves=[charts.real_curve(label, record.losses)])
    plot.title = "Real loss per epoch (solid), the forecast (dashed) and the guard's events"
    for k, event in enumerate(record.events, start=1):
        plot.markers.append(
            Marker(event_epoch(event, record.steps_per_epoch), f"{k}", colour="#8e44ad")
        )
    caption = LOSS_CAPTION + (
        " Purple lines: the guard's events, numbered as in the table below, at the batch "
        "where each happened."
        if record.events
        else ""
    )
    return chart("train-loss", plot.draw("train-loss"), text(caption))


def _events(record: TrainingRecord) -> str:
    if not record.guard:
        return "<p>The guard was off (--no-guard).</p>"
    if not record.events:
        return "<p>No non-finite loss or weight during training: the guard did nothing.</p>"
    rows = []
    for k, event in enumerate(record.events, start=1):
        fields = event_fields(event)
        where = f"epoch {int(fields.get('epoch', 0)) + 1}, batch {int(fields.get('batch', 0)) + 1}"
        count = int(fields.get("count") or 1)
        where += f" (seen {count} times)" if count > 1 else ""
        details = "; ".join(
            f"{key}: {_value(value)}"
            for key, value in fields.items()
            if key not in _OWN_COLUMNS and not _empty(value)
        )
        rows.append(
            (
                text(k),
                text(where),
                text(str(fields.get("cause", "—")).replace("_", " ")),
                text(str(fields.get("action", "—")).replace("_", " ")),
                text(_what_happened(event, fields)),
                text(fields.get("fix") or "—"),
                f'<span class="note">{text(details)}</span>',
            )
        )
    return table(["#", "where", "cause", "action", "what happened", "fix", "details"], rows)


def _what_happened(event: Any, fields: dict[str, Any]) -> str:
    """The event's message without its closing fix, which has a column of its own."""
    message, fix = str(fields.get("message") or describe_event(event)), fields.get("fix")
    suffix = f" Fix: {fix}."
    return message[: -len(suffix)] if fix and message.endswith(suffix) else message


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, (tuple, list, dict)) and not value)


def _value(value: Any) -> str:
    if isinstance(value, dict):  # the evidence: its numbers, by name
        return ", ".join(f"{k} {_value(v)}" for k, v in value.items() if not _empty(v))
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(_value(v) for v in value) + ")"
    if isinstance(value, float):
        return number(value)
    return str(value)


def _coefficients(record: TrainingRecord) -> str:
    if not record.coefficients:
        return "<p>No coefficients.</p>"
    rows = [
        (text(term), text(precise(trained)), text(precise(exact)))
        for term, trained, exact in record.coefficients
    ]
    rows.append(
        ("loss (MSE)", text(precise(record.final_loss)), text(precise(record.optimal_loss)))
    )
    return table(
        ["term", "trained (Keras)", "exact (stablefit.fit)"], rows, numeric=[False, True, True]
    )


def _forecast(record: TrainingRecord) -> str:
    diagnosis = record.diagnosis
    if diagnosis is None or diagnosis.training is None:
        return "<p>No forecast.</p>"
    items = "".join(
        f"<li>{outcome_text(f.outcome)}: {text(forecast_sentence(f, diagnosis.settings))}</li>"
        for f in forecasts_of(diagnosis)
    )
    return f"<ul>{items}</ul>" + findings_blocks(diagnosis.findings)
