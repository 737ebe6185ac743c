"""The HTML reports opened in real headless Chromium: doctor, fit, train and the demo.

Each report is written by the command a user runs, opened from disk, and checked for
console errors, uncaught exceptions, dialogs and requests (none allowed), for every chart
drawn at a non-zero size with the number of marks its data call for, and for the escaping
of a column named like an HTML tag. A screenshot of each is saved in pytest's temporary
directory (the path is printed; ``pytest -s`` shows it).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import stablefit
from stablefit.cli.main import main
from stablefit.diagnose.checks.outliers import ROBUST_Z
from stablefit.guard import ACTIONS, CAUSES

HOSTILE = "<img src=x onerror=alert(1)>"
# A file name with markup and quotes in it: it is shown in the title and the heading.
HOSTILE_FILE = "data <b>&'\".csv"
REPORT_LIMIT = 2 * 1024 * 1024


def write_data(path: Path, rows: int = 400, seed: int = 7) -> Path:
    """Features on scales 1 to 1e6 (one of them named HOSTILE), a NaN, an outlier, an
    exact copy, and a noisy target."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=rows)
    b = rng.normal(size=rows) * 1e6 + 3e6
    c = rng.normal(size=rows) * 1e3
    a[17] = 40.0  # an outlier, robust z ≈ 40
    y = 2.0 * a + 1e-6 * b + 0.01 * c + rng.normal(size=rows)
    columns = {"a": a, HOSTILE: b, "c": c, "a_copy": a.copy(), "y": y}
    lines = [",".join(f'"{n}"' if "," in n else n for n in columns)]
    for i in range(rows):
        cells = [repr(float(v[i])) for v in columns.values()]
        if i == 5:
            cells[2] = ""  # a missing value in c, line 7
        lines.append(",".join(cells))
    path.write_text("\n".join(lines) + "\n")
    return path


def screenshot(opened, tmp_path: Path, name: str) -> Path:
    target = tmp_path / f"{name}.png"
    opened.page.screenshot(path=str(target), full_page=True)
    print(f"screenshot: {target}")
    assert target.stat().st_size > 10_000
    return target


def assert_charts_drawn(opened, expected: set[str]) -> None:
    sizes = opened.chart_sizes()
    assert expected <= set(sizes)
    for name, (width, height) in sizes.items():
        assert width > 300 and height > 80, name


def assert_hostile_name_is_text(opened, *, in_charts: bool = True) -> None:
    assert opened.count("img") == 0
    assert opened.count("script") == 0
    assert HOSTILE in opened.text()
    if in_charts:
        assert HOSTILE in opened.svg_texts()


@pytest.fixture(scope="module")
def data_csv(tmp_path_factory) -> Path:
    return write_data(tmp_path_factory.mktemp("data") / HOSTILE_FILE)


def test_doctor_report(data_csv, tmp_path, browser, capsys):
    report = tmp_path / "doctor.html"
    code = main(
        ["doctor", str(data_csv), "--target", "y", "--optimizer", "sgd", "--html", str(report)]
    )
    assert code == 1  # NaN in c and SGD diverges
    assert f"HTML report written to {report}" in capsys.readouterr().err
    assert report.stat().st_size < REPORT_LIMIT
    # The same diagnosis, in this process, says how many marks each chart needs.
    diagnosis = stablefit.diagnose(str(data_csv), target="y", optimizer="sgd")
    opened = browser.open_file(report)
    opened.assert_clean(own_url=report.resolve().as_uri())
    assert_charts_drawn(opened, {"loss", "stability", "scales", "vif", "missing", "outliers"})
    curves = 1 + int(diagnosis.training.recommended is not None)
    assert opened.count('[id^="loss-curve-"]:not([id$="-nonfinite"])') == curves
    stability = diagnosis.stability_map
    assert opened.marks("#stability-cells") == len(stability.optimizers) * len(
        stability.learning_rates
    )
    assert opened.marks("#stability-chosen") == 1
    columns = diagnosis.columns
    assert opened.marks("#scales-sd") == sum(c.std > 0 for c in columns)
    features_with_vif = [c for c in columns if c.role == "feature" and not math.isnan(c.vif)]
    assert opened.count('[id^="vif-bar-"]') == len(features_with_vif)
    assert opened.count('[id^="missing-nan-"]') == 1  # c alone has a missing value
    extremes = sum(
        int(np.count_nonzero(np.isfinite(c.robust_z) & np.isfinite(c.leverage))) for c in columns
    )
    assert opened.marks("#outlier-points") == extremes
    text = opened.text()
    for finding in diagnosis.findings:
        assert finding.code in text
    assert "a_copy = a" in text  # the exact relation found
    assert "line 7" in text  # where the missing value is
    assert f"robust z = {ROBUST_Z:g}" in opened.svg_texts()
    assert opened.count("#recommended-code") == 1
    assert HOSTILE_FILE in opened.page.title()
    assert_hostile_name_is_text(opened)
    screenshot(opened, tmp_path, "doctor")


def test_fit_report(data_csv, tmp_path, browser):
    report = tmp_path / "fit.html"
    assert (
        main(["fit", str(data_csv), "--target", "y", "--missing", "drop", "--html", str(report)])
        == 0
    )
    assert report.stat().st_size < REPORT_LIMIT
    result = stablefit.fit(str(data_csv), target="y", missing="drop")
    sample = result.residual_sample
    opened = browser.open_file(report)
    opened.assert_clean(own_url=report.resolve().as_uri())
    assert_charts_drawn(opened, {"forest", "digits", "residuals", "qq", "leverage"})
    intervals = [row for row in result.table() if math.isfinite(row[5])]
    assert opened.count('[id^="forest-ci-"]') == len(intervals)
    assert opened.count('[id^="digits-bar-"]') == len(result.table())
    assert opened.marks("#residuals-points") == sample.rows.size
    standardized = int(np.isfinite(sample.standardized).sum())
    assert opened.marks("#qq-points") == standardized
    assert opened.marks("#leverage-points") == standardized
    text = opened.text()
    # The same numbers as summary(): every coefficient as the text table prints it.
    for _, coef, *_ in result.table():
        assert f"{coef:.6g}" in text
    assert "a_copy" in text and "collinear with the columns before it" in text
    assert_hostile_name_is_text(opened)
    screenshot(opened, tmp_path, "fit")


@pytest.mark.keras
@pytest.mark.slow
def test_train_report_marks_the_guards_events(data_csv, tmp_path, browser):
    # Plain SGD at 0.5 on features of scale 1e6 overflows at once: the guard steps in.
    report = tmp_path / "train.html"
    clean = tmp_path / "clean.csv"
    rows = [line for k, line in enumerate(data_csv.read_text().splitlines()) if k != 6]
    clean.write_text("\n".join(rows) + "\n")
    code = main(
        ["train", str(clean), "--target", "y", "--optimizer", "sgd", "--learning-rate", "0.5",
         "--epochs", "4", "--html", str(report)]
    )  # fmt: skip
    assert code == 1  # the guard had to stop it
    opened = browser.open_file(report)
    opened.assert_clean(own_url=report.resolve().as_uri())
    assert_charts_drawn(opened, {"train-loss"})
    events = opened.count("#events tbody tr")
    assert events >= 1  # the guard stops at its first learning-rate event: no rate trains it
    assert opened.count('[id^="train-loss-mark-"]') == events
    assert opened.count('[id^="train-loss-curve-"]:not([id$="-nonfinite"])') >= 1
    headings, *cells = opened.page.evaluate(
        """() => [...document.querySelectorAll('#events tr')].map(
             row => [...row.children].map(cell => cell.innerText.trim()))"""
    )
    assert headings == ["#", "where", "cause", "action", "what happened", "fix", "details"]
    named = {c.replace("_", " ") for c in CAUSES}, {a.replace("_", " ") for a in ACTIONS}
    for _, _, cause, action, happened, fix, _ in cells:
        assert cause in named[0] and action in named[1]
        assert fix not in ("", "—") and not happened.endswith(f"Fix: {fix}.")
    # It stops at its first learning-rate event, saying so in the action column.
    assert (cells[-1][2], cells[-1][3]) == ("learning rate", "stopped")
    assert "learning rate below" in cells[-1][5]
    text = " ".join(opened.text().split())
    assert "The guard stopped training" in text and "cause learning rate" in text
    assert "stable only for learning rates below" in text
    assert_hostile_name_is_text(opened, in_charts=False)  # named in the guard's message
    screenshot(opened, tmp_path, "train")


def test_demo_report(tmp_path, browser, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--no-keras"]) == 0
    report = tmp_path / "stablefit-demo.html"
    assert f"HTML report: {report}" in capsys.readouterr().out
    assert report.stat().st_size < REPORT_LIMIT
    opened = browser.open_file(report)
    opened.assert_clean(own_url=report.resolve().as_uri())
    assert_charts_drawn(opened, {"demo-panels", "loss", "stability", "forest", "residuals"})
    for case in range(5):  # a panel per example, each with its forecast
        assert opened.count(f'[id^="demo-{case}-curve-"]') >= 1
    screenshot(opened, tmp_path, "demo")


def test_notebook_fragments_escape_without_the_pages_policy(data_csv, browser):
    # In a notebook the report has no content security policy to fall back on: the
    # escaping alone must keep the column name inert.
    diagnosis = stablefit.diagnose(str(data_csv), target="y")
    result = stablefit.fit(str(data_csv), target="y", missing="drop")
    for html in (diagnosis._repr_html_(), result._repr_html_()):
        opened = browser.open_html(f"<!DOCTYPE html><html><body>{html}</body></html>")
        opened.assert_clean(own_url=None)
        assert_hostile_name_is_text(opened)
        assert opened.chart_sizes()


def test_a_large_file_gives_a_report_as_small_as_a_small_one(tmp_path):
    # Both keep 1,000 to 2,000 rows for the residual plots: 20 times the rows, about the
    # same size.
    small = write_data(tmp_path / "small.csv", rows=10_000)
    large = write_data(tmp_path / "large.csv", rows=200_000, seed=8)
    sizes = {}
    for path in (small, large):
        result = stablefit.fit(str(path), target="y", missing="drop")
        assert result.residual_sample.rows.size <= 2000
        sizes[path.name] = len(result.to_html())
    assert sizes["large.csv"] < 1.3 * sizes["small.csv"]  # 1,000 to 2,000 rows each
    assert sizes["large.csv"] < REPORT_LIMIT


def test_a_curve_without_a_completed_epoch_says_so_in_the_legend():
    from stablefit.report.html.charts import Curve, LossChart

    chart = LossChart(
        curves=[
            Curve("forecast", np.array([1.0, 2.0]), np.array([1.0, 0.5]), simulated=True),
            Curve("Keras", np.array([]), np.array([])),
        ]
    )
    drawing = chart.draw("loss")
    assert "Keras (no epoch completed)" in drawing
    assert "forecast (" not in drawing


def test_column_names_of_hundreds_of_characters_leave_the_charts_room():
    """A 300-character name as a tick label left the plot area no room: matplotlib warned
    (a 'warning:' line under the command) and the charts came out empty."""
    rng = np.random.default_rng(3)
    long_a, long_b = "a" * 300, "b" * 300
    X = pd.DataFrame({long_a: rng.normal(size=200) * 1e6, long_b: rng.normal(size=200)})
    X.iloc[3, 0] = 1e12  # an outlier, for the doctor's outlier chart
    y = X[long_a] * 1e-6 + X[long_b] + rng.normal(size=200)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pages = [stablefit.fit(X, y).to_html(), stablefit.diagnose(X, y).to_html()]
    for page in pages:
        assert "a" * 39 + "…" in page and long_a in page  # cut on the charts, whole in tables


def test_column_names_with_a_tab_or_dollar_signs_are_drawn_as_written():
    """A tab had no glyph (three matplotlib warnings under the command) and a name with two
    dollar signs was drawn in matplotlib's math mode ('$a$' as an italic a)."""
    from stablefit.report.html.charts import chart_name

    assert chart_name("a\tb") == "a\\tb" and chart_name("cost $a$") == r"cost \$a\$"
    rng = np.random.default_rng(4)
    X = pd.DataFrame({"a\tb": rng.normal(size=100), "cost $a$ \\frac": rng.normal(size=100)})
    y = X["a\tb"] + rng.normal(size=100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pages = [stablefit.fit(X, y).to_html(), stablefit.diagnose(X, y).to_html()]
    assert all("cost $a$ \\frac" in page for page in pages)  # the tables hold it whole
