"""A Diagnosis as a terminal report (rich), as plain text, and as JSON.

The report reads top-down: what will happen (the training forecast), why (the findings,
most severe first, with their numbers), then the fix as code the user can paste. On a
terminal it has colour; written to a file or a pipe it is plain text.
"""

from __future__ import annotations

import io
import math
from typing import IO, Any

from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.text import Text

from stablefit.diagnose import COMPARISON_OPTIMIZER
from stablefit.diagnose.checks.common import plural
from stablefit.diagnose.checks.forecast import describe_forecast
from stablefit.diagnose.findings import Diagnosis, Finding, format_number
from stablefit.diagnose.frameworks import KERAS, LABELS
from stablefit.report.plain import visible, visible_lines
from stablefit.report.terminal import PlainConsole, plain_text

SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}
OUTCOME_STYLE = {"diverges": "bold red", "stalls": "yellow", "converges": "green"}
OUTCOME_MARK = {"diverges": "✗", "stalls": "!", "converges": "✓"}


def _indent(renderable: RenderableType, left: int) -> Padding:
    return Padding(renderable, (0, 0, 0, left), expand=False)


def _heading(text: str) -> Text:
    return Text(text, style="bold underline")


def _header(diagnosis: Diagnosis) -> Text:
    facts = diagnosis.facts
    names = ", ".join(facts.feature_names[:8])
    if len(facts.feature_names) > 8:
        names += f", … ({len(facts.feature_names)} in all)"
    text = Text()
    text.append(visible(f"{facts.origin}: "), style="bold")
    text.append(f"{plural(facts.n_rows, 'row')} ({facts.n_complete} complete), ")
    text.append(visible(f"{plural(len(facts.feature_names), 'feature')} ({names})"))
    text.append(visible(f", target {facts.target_name}" if facts.target_name else ", no target"))
    if facts.left_out:
        text.append("\n" + visible(facts.left_out_text()))
    return text


def forecast_sentence(forecast: Any, settings: dict[str, Any]) -> str:
    """What one forecast says will happen, in a sentence."""
    momentum = float(settings.get("momentum") or 0.0)
    nesterov = bool(settings.get("nesterov"))
    if settings.get("optimizer") is None and forecast.optimizer != COMPARISON_OPTIMIZER:
        momentum, nesterov = 0.0, False  # momentum went to the SGD comparison only
    return describe_forecast(forecast, momentum=momentum, nesterov=nesterov)


def _forecast_line(forecast: Any, settings: dict[str, Any]) -> Text:
    line = Text()
    line.append(f"{OUTCOME_MARK[forecast.outcome]} ", style=OUTCOME_STYLE[forecast.outcome])
    line.append(visible(forecast_sentence(forecast, settings)))
    return line


def _framework(settings: dict[str, Any]) -> str:
    """``"PyTorch: "`` for a torch forecast (Keras's is the default and goes unsaid)."""
    framework = settings.get("framework", KERAS)
    return "" if framework == KERAS else f"{LABELS[framework]}: "


def _optimum(loss: float) -> str:
    """``optimum 0.42``; a NaN is never printed: the optimum was not computable (values
    whose squares overflow float64; the forecast's notes say why)."""
    if math.isnan(loss):
        return "optimum not computable"
    return f"optimum {format_number(loss)}"


def _what_will_happen(diagnosis: Diagnosis) -> list[RenderableType]:
    training = diagnosis.training
    parts: list[RenderableType] = [_heading("What will happen")]
    if training is None:
        parts.append(_indent(Text("No training forecast (see the findings)."), 2))
        return parts
    settings = diagnosis.settings
    epochs = settings.get("epochs")
    batch = settings.get("batch_size")
    lines: list[RenderableType] = [
        _forecast_line(training, settings),
        _indent(
            Text(
                f"{_framework(settings)}{epochs} epochs, batch size {batch}, "
                f"{settings.get('dtype')}; initial loss "
                f"{format_number(training.initial_loss)}, {_optimum(training.optimal_loss)}",
                style="dim",
            ),
            2,
        ),
    ]
    if training.approximation:
        lines.append(_indent(plain_text(training.approximation, style="dim"), 2))
    for other in diagnosis.other_forecasts:
        line = Text()
        line.append("beside it: ", style="dim")
        line.append_text(_forecast_line(other, settings))
        lines.append(line)
    parts.append(_indent(Group(*lines), 2))
    return parts


def _finding(finding: Finding) -> RenderableType:
    title = Text()
    title.append(f"{finding.code} ", style="bold")
    title.append(f"{finding.severity:<7} ", style=SEVERITY_STYLE[finding.severity])
    title.append(visible(finding.title), style="bold")
    body = plain_text(finding.message)
    fix = Text()
    fix.append("Fix: ", style="bold green")
    fix.append(visible(finding.fix))
    return Group(title, _indent(Group(body, fix), 4))


def _why(diagnosis: Diagnosis) -> list[RenderableType]:
    if not diagnosis.findings:
        return [
            _heading("Why"),
            _indent(Text("No hazards found in the data."), 2),
        ]
    items = [Padding(_finding(f), (0, 0, 1, 2), expand=False) for f in diagnosis.findings]
    return [_heading("Why (findings, most severe first)"), *items]


def fix_snippets(diagnosis: Diagnosis) -> list[str]:
    """The code to paste: the data fixes of error-level findings, then the recommended set-up."""
    snippets = []
    training = diagnosis.training
    for finding in diagnosis.findings:
        data_error = finding.severity == "error" and finding.code.startswith("SF1")
        if data_error and finding.fix_code and finding.fix_code not in snippets:
            snippets.append(finding.fix_code)
    recommended = getattr(training, "recommended", None)
    if recommended is not None and recommended.code:
        snippets.append(recommended.code)
    return snippets


def _fix(diagnosis: Diagnosis, highlight: bool) -> list[RenderableType]:
    snippets = fix_snippets(diagnosis)
    if not snippets:
        return []
    code = "\n\n".join(snippets)
    if highlight:
        from rich.syntax import Syntax  # pygments: its Python lexer takes a while to build

        block: RenderableType = Syntax(
            visible_lines(code), "python", theme="ansi_dark", background_color="default"
        )
    else:  # as Syntax lays it out without colour
        block = Text(visible_lines(code).expandtabs(4), no_wrap=True)
    return [_heading("Fix (paste this)"), Padding(block, (0, 2), expand=False)]


def renderables(diagnosis: Diagnosis, *, highlight: bool = True) -> Group:
    """The whole report as one rich renderable (the code of the fix highlighted)."""
    parts: list[RenderableType] = [_header(diagnosis), Text()]
    parts += _what_will_happen(diagnosis)
    parts.append(Text())
    parts += _why(diagnosis)
    parts += _fix(diagnosis, highlight)
    return Group(*parts)


def print_diagnosis(diagnosis: Diagnosis, file: IO[str] | None = None) -> None:
    """Print the report: coloured on a terminal, plain text otherwise."""
    console = PlainConsole(file=file)
    if console.is_terminal:
        console.print(renderables(diagnosis))
    else:
        console.file.write(render_text(diagnosis, width=max(console.width, 100)))


def render_text(diagnosis: Diagnosis, *, width: int = 100) -> str:
    """The report as plain text (no colour, lines wrapped at ``width``)."""
    buffer = io.StringIO()
    console = PlainConsole(file=buffer, width=width, color_system=None, force_terminal=False)
    console.print(renderables(diagnosis, highlight=False))
    return "".join(line.rstrip() + "\n" for line in buffer.getvalue().splitlines())


def to_json(diagnosis: Diagnosis, *, indent: int | None = 2) -> str:
    """The JSON form (schema: docs/findings.md)."""
    return diagnosis.to_json(indent=indent)
