"""The demo's report: each of the seed's examples forecast beside the real Keras run, then
the full doctor report of the one that turns NaN, and the exact fit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from stablefit.report.html.charts import chart, figure, svg
from stablefit.report.html.doctor import LOSS_CAPTION, diagnosis_body, forecast_chart
from stablefit.report.html.fit import fit_body
from stablefit.report.html.page import document, table, text


@dataclass(frozen=True)
class DemoCase:
    """One example as the demo ran it: its title, setting, forecast and real losses."""

    title: str
    setting: str
    forecast: str
    keras: str
    diagnosis: Any
    keras_losses: Sequence[float] | None = None


def demo_page(cases: Sequence[DemoCase], *, detailed: int, fit: Any) -> str:
    """The demo report; ``detailed`` is the case whose whole doctor report is shown."""
    rows = [(text(c.title), text(c.setting), text(c.forecast), text(c.keras)) for c in cases]
    overview = table(["example", "setting", "stablefit forecast", "Keras (seed 0)"], rows)
    chosen = cases[detailed]
    keras = {chosen.setting: chosen.keras_losses} if chosen.keras_losses is not None else {}
    return document(
        "stablefit demo",
        "<h1>stablefit demo</h1>"
        "<p class='facts'>The three examples of “Why is TensorFlow's simple linear fit "
        "producing NaN loss?”: what stablefit forecasts for each, in milliseconds, beside "
        "what Keras really does.</p>"
        + overview
        + _panels(cases)
        + diagnosis_body(
            chosen.diagnosis,
            keras_history=keras,
            heading=f"Why Example {chosen.title} fails: the doctor's report",
        )
        + fit_body(fit, heading="The exact fit of Example 1 (stablefit.fit)"),
    )


def _panels(cases: Sequence[DemoCase]) -> str:
    columns = 2
    rows = -(-len(cases) // columns)
    with figure(7.5, 2.3 * rows, nrows=rows, ncols=columns, squeeze=False) as fig:
        axes = fig.axes
        for k, case in enumerate(cases):
            real = {"Keras": case.keras_losses} if case.keras_losses is not None else {}
            plot = forecast_chart(case.diagnosis, real)
            plot.title = f"Example {case.title}: {case.setting}"
            plot.draw_on(axes[k], f"demo-{k}", legend=False)
        for ax in axes[len(cases) :]:
            ax.set_visible(False)
        drawing = svg(fig)
    caption = (
        "Each example: the forecast of its setting (blue, dashed), the set-up stablefit "
        "recommends (red, dashed) and the real Keras run (green, solid, seed 0). " + LOSS_CAPTION
    )
    return chart("demo-panels", drawing, text(caption))
