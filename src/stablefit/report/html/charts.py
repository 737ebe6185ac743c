"""Charts as inline SVG, drawn by matplotlib (the ``plot`` extra).

Why static SVG from matplotlib rather than a JavaScript charting library: the report must
open from disk with no request, print, and show in a notebook; SVG inlined in the page does
all three with no script at all (notebooks that are not trusted, and GitHub's notebook
view, drop scripts but keep SVG), stays sharp when printed or zoomed, and keeps every mark
in the page's DOM, where a test (or a reader's browser search) can find it. Text stays text
(``svg.fonttype: none``) in the reader's own fonts, and matplotlib escapes it.

Marks that a test counts carry an SVG ``id`` (matplotlib's ``gid``): ``{chart}-{what}``.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stablefit.errors import StablefitInputError
from stablefit.report.plain import visible

OUTCOME_COLOURS = {"diverges": "#c0392b", "stalls": "#e0a526", "converges": "#2e9e4f"}
SERIES_COLOURS = ("#1f5fa8", "#c0392b", "#2e9e4f", "#8e44ad", "#d35400", "#16a085", "#7f8c8d")
FLOAT32_MAX = float(np.finfo(np.float32).max)
FLOAT32_EXACT_INTEGERS = 2.0**24

_STYLE = {
    "svg.fonttype": "none",  # text as text: selectable, searchable, small
    "svg.hashsalt": "stablefit",  # the same report for the same data
    "text.parse_math": False,  # a "$" in a column name is a dollar sign
    "font.size": 9.0,
    "font.family": "sans-serif",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 10.0,
    "axes.titlelocation": "left",
    "legend.fontsize": 8.0,
    "legend.frameon": False,
}
# matplotlib's own element ids (figure_1, line2d_3, ...) repeat in every chart of a page.
_AUTOMATIC_ID = re.compile(r' id="[A-Za-z.]+_\d+"')
_PROLOGUE = re.compile(r"^.*?(?=<svg)", re.DOTALL)
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.DOTALL)


# Longest column name drawn on a chart (the tables beside the charts hold it whole): a name
# of hundreds of characters left the plot area no room at all.
CHART_NAME_CHARS = 40


def chart_name(name: str) -> str:
    """A column name as a chart's axis or legend shows it: control characters as escapes
    (matplotlib has no glyph for a tab), a dollar sign as itself (a pair would start
    matplotlib's math mode), cut to ``CHART_NAME_CHARS``."""
    name = visible(name)
    name = name if len(name) <= CHART_NAME_CHARS else name[: CHART_NAME_CHARS - 1] + "…"
    return name.replace("$", r"\$")


def ensure_matplotlib() -> None:
    """Raise the input error that says how to install matplotlib, when it is missing
    (before a long run whose report could not be written)."""
    _matplotlib()


def _matplotlib() -> Any:
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError:
        raise StablefitInputError(
            "HTML reports draw their charts with matplotlib: pip install 'stablefit[plot]'"
        ) from None
    return matplotlib, Figure


@contextmanager
def figure(width: float = 7.5, height: float = 3.0, **subplots: Any) -> Iterator[Any]:
    """A matplotlib Figure (not pyplot: no global state, no GUI backend) in the report's
    style; ``subplots`` go to ``Figure.subplots``."""
    matplotlib, Figure = _matplotlib()
    with matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=(width, height), layout="constrained")
        if subplots:
            fig.subplots(**subplots)
        else:
            fig.add_subplot()
        yield fig


def svg(fig: Any) -> str:
    """The figure as an ``<svg>`` element to inline in HTML."""
    matplotlib, _ = _matplotlib()
    buffer = io.StringIO()
    with matplotlib.rc_context(_STYLE):
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    drawn = _METADATA.sub("", _PROLOGUE.sub("", buffer.getvalue(), count=1), count=1)
    return _AUTOMATIC_ID.sub("", drawn)


def log_scale(ax: Any, axis: str = "y", ticks: int = 8) -> None:
    """A log axis labelled in plain numbers (``1e-12``, ``0.01``, ``1e6``): at most
    ``ticks`` labelled decades, minor ticks only over a short span."""
    from matplotlib import ticker

    getattr(ax, f"set_{axis}scale")("log")
    which = ax.xaxis if axis == "x" else ax.yaxis
    which.set_major_locator(ticker.LogLocator(base=10, numticks=ticks))
    which.set_major_formatter(ticker.FuncFormatter(lambda value, _: _short(value)))
    low, high = getattr(ax, f"get_{axis}lim")()
    if low > 0 and high / low > 1e4:
        which.set_minor_locator(ticker.NullLocator())
    which.set_minor_formatter(ticker.NullFormatter())


def number_marks(artists: Any, prefix: str) -> None:
    """Give each of ``artists`` (a bar chart's bars) the id ``{prefix}-{k}``."""
    for k, artist in enumerate(artists):
        artist.set_gid(f"{prefix}-{k}")


def chart(name: str, drawing: str, caption: str) -> str:
    """A figure block: the SVG and its (already escaped) caption."""
    return (
        f'<figure class="chart" data-chart="{name}">{drawing}'
        f"<figcaption>{caption}</figcaption></figure>"
    )


# -- loss curves (doctor, train, demo) --------------------------------------------------------


@dataclass(frozen=True)
class Curve:
    """One loss curve: losses at the given (1-based, possibly fractional) epochs.

    ``band`` is an optional (low, high) range around it (the forecast's seeds);
    ``simulated`` draws it dashed.
    """

    label: str
    epochs: np.ndarray
    losses: np.ndarray
    band: tuple[np.ndarray, np.ndarray] | None = None
    simulated: bool = False


@dataclass(frozen=True)
class Marker:
    """A vertical mark on the loss chart at an epoch, numbered or labelled."""

    epoch: float
    label: str
    colour: str = "#444444"


@dataclass
class LossChart:
    """Loss curves on a log axis with their first non-finite epochs, the optimum and
    markers (guard events)."""

    curves: list[Curve] = field(default_factory=list)
    optimum: float | None = None
    markers: list[Marker] = field(default_factory=list)
    title: str = "Loss per epoch"

    def draw(self, name: str, *, width: float = 7.5, height: float = 3.4) -> str:
        """The chart as SVG; its marks' ids start with ``name``."""
        with figure(width, height) as fig:
            self.draw_on(fig.axes[0], name)
            return svg(fig)

    def draw_on(self, ax: Any, name: str, *, legend: bool = True) -> None:
        """Draw the chart on a matplotlib Axes (one panel of a larger figure)."""
        finite_values = []
        for k, curve in enumerate(self.curves):
            colour = SERIES_COLOURS[k % len(SERIES_COLOURS)]
            finite_values.append(_draw_curve(ax, curve, colour, f"{name}-curve-{k}"))
        values = np.concatenate(finite_values) if finite_values else np.array([])
        positive = values[values > 0]
        if self.optimum is not None and math.isfinite(self.optimum):
            shown = self.optimum > 0 and (
                not positive.size or self.optimum >= positive.min() * 1e-6
            )
            if shown:
                ax.axhline(
                    self.optimum,
                    color="#555555",
                    lw=1,
                    ls=":",
                    gid=f"{name}-optimum",
                    label=f"least-squares optimum {_short(self.optimum)}",
                )
            else:
                ax.plot([], [], " ", label=f"optimum {_short(self.optimum)} (below the axis)")
        for k, marker in enumerate(self.markers):
            ax.axvline(marker.epoch, color=marker.colour, lw=1, alpha=0.8, gid=f"{name}-mark-{k}")
            ax.annotate(
                marker.label,
                (marker.epoch, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(2, -2),
                textcoords="offset points",
                va="top",
                fontsize=7.5,
                color=marker.colour,
            )
        if positive.size:
            log_scale(ax, "y")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss (MSE)")
        ax.set_title(self.title)
        if self.curves and legend:
            ax.legend(loc="best")


def _short(value: float) -> str:
    from stablefit.diagnose.findings import format_number

    return format_number(value)


def _draw_curve(ax: Any, curve: Curve, colour: str, gid: str) -> np.ndarray:
    """Draw the finite part of a curve; mark its first non-finite epoch. Returns the finite
    losses drawn (for the axis limits)."""
    epochs = np.asarray(curve.epochs, dtype=float)
    losses = np.asarray(curve.losses, dtype=float)
    finite = np.isfinite(losses)
    # A log axis has no room for a loss of exactly 0 (a perfect fit): drawn at the floor.
    drawn = np.where(finite & (losses > 0), losses, np.nan)
    # Real runs under the forecasts, with a dot per epoch, so that both show where they agree.
    style: dict[str, Any] = (
        {"ls": "--", "lw": 1.6, "zorder": 3}
        if curve.simulated
        else {"ls": "-", "lw": 1.2, "marker": "o", "ms": 2.5, "zorder": 2}
    )
    label = curve.label
    bad = np.flatnonzero(~finite)
    if not epochs.size:  # listed all the same, so that the legend says why no line is drawn
        label += " (no epoch completed)"
    elif bad.size:
        first = bad[0]
        kind = "NaN" if np.isnan(losses[first]) else "inf"
        label += f" ({kind} at epoch {_epoch_text(epochs[first])})"
    ax.plot(epochs, drawn, color=colour, gid=gid, label=label, **style)
    if curve.band is not None:
        low, high = (np.asarray(b, dtype=float) for b in curve.band)
        ok = np.isfinite(low) & np.isfinite(high) & (low > 0)
        if ok.any():
            ax.fill_between(
                epochs,
                np.where(ok, low, np.nan),
                np.where(ok, high, np.nan),
                color=colour,
                alpha=0.15,
                lw=0,
            )
    if bad.size:
        x = epochs[bad[0]]
        ax.axvline(x, color=colour, lw=1, ls=":", alpha=0.9, gid=f"{gid}-nonfinite")
        ax.plot(
            [x],
            [1.0],
            marker="x",
            color=colour,
            ms=7,
            mew=2,
            clip_on=False,
            transform=ax.get_xaxis_transform(),
        )
    return losses[finite]


def _epoch_text(epoch: float) -> str:
    return str(int(epoch)) if float(epoch).is_integer() else f"{epoch:.2f}"


def forecast_curve(label: str, history: Any) -> Curve:
    """A forecast's simulated history (median over seeds, their range as a band)."""
    losses = np.asarray(history.losses, dtype=float)
    with np.errstate(invalid="ignore"):
        finite = np.where(np.isfinite(losses), losses, np.nan)
        all_missing = np.isnan(finite).all(axis=0)
        filled = np.where(all_missing, np.inf, finite)
        low, high = np.nanmin(filled, axis=0), np.nanmax(filled, axis=0)
    return Curve(label, history.epochs, history.median, band=(low, high), simulated=True)


def real_curve(label: str, losses: Sequence[float]) -> Curve:
    """A real run's per-epoch losses (Keras's History)."""
    values = np.asarray(list(losses), dtype=float)
    return Curve(label, np.arange(1, values.size + 1), values)
