"""Data far from zero: the cases of issue 9 and 14 that once came back wrong, or right
under a certificate that did not match, checked against exact rational arithmetic."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import stablefit
from stablefit.cli.main import main
from tests.solve.exact import digits_achieved, exact_fit


def achieved_digits(X: np.ndarray, y: np.ndarray, params: np.ndarray) -> np.ndarray:
    reference = exact_fit([np.ones(len(y)), *X.T], y).solution
    return np.array([digits_achieved(b, x, 1.0) for b, x in zip(params, reference, strict=True)])


def offset_problem(offset: float, rows: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """x1 = offset + k/8, x2 = offset + m/4, y ≈ offset: every column's offset dwarfs its
    spread, and the intercept (about -1.5·offset) cancels against the slopes' terms."""
    rng = np.random.default_rng(0)
    x1 = offset + np.arange(rows) / 8
    x2 = offset + rng.integers(0, 64, rows) / 4
    y = offset + np.round(0.5 * (x1 - offset) + 2 * (x2 - offset) + rng.normal(size=rows), 2)
    return np.column_stack([x1, x2]), y


@pytest.mark.parametrize("offset", [1e12, 1e13, 1e14, 1e15])
def test_offsets_through_the_python_api(offset):
    X, y = offset_problem(offset)
    result = stablefit.fit(X, y)
    achieved = achieved_digits(X, y, result.params)
    assert np.all(achieved >= 14), achieved
    assert np.all(np.array(result.certificate.digits_per_coef) <= achieved), achieved
    assert result.certificate.converged


def test_offset_1e15_through_the_command_line(tmp_path, capsys):
    X, y = offset_problem(1e15)
    path = tmp_path / "offsets.csv"
    pd.DataFrame({"x1": X[:, 0], "x2": X[:, 1], "y": y}).to_csv(path, index=False)
    assert main(["fit", str(path), "--target", "y", "--json", str(tmp_path / "fit.json")]) == 0
    report = json.loads((tmp_path / "fit.json").read_text())
    params = [report["intercept"]["coef"]] + [report["features"][x]["coef"] for x in ("x1", "x2")]
    achieved = achieved_digits(X, y, np.array(params))
    assert np.all(achieved >= 14), achieved
    claimed = report["certificate"]["digits_per_coef"]
    assert np.all(np.array(claimed) <= achieved), (claimed, achieved)


def test_parquet_uint64_column_near_2_to_the_62(tmp_path):
    rng = np.random.default_rng(1)
    u = np.uint64(2**62) + rng.integers(0, 2**20, 60).astype(np.uint64) * np.uint64(1024)
    x2 = rng.normal(size=60)
    y = 3.0 * (u.astype(float) - 2.0**62) / 2**20 + x2 + rng.normal(size=60)
    path = tmp_path / "wide.parquet"
    pq.write_table(pa.table({"u": u, "x2": x2, "y": y}), path)
    result = stablefit.fit(path, target="y")
    achieved = achieved_digits(np.column_stack([u.astype(float), x2]), y, result.params)
    assert np.all(achieved >= 14), achieved
    assert np.all(np.array(result.certificate.digits_per_coef) <= achieved), achieved


def test_many_rows_far_from_zero_in_double_double():
    """Beyond the size refined with exact residuals: 20,000 rows (three blocks), columns
    near 1e15 with spreads of 0.1 to 10, a target near -3e15. What the double-double
    residuals lose to cancellation is real here, and the certificate must cover it."""
    rng = np.random.default_rng(7)
    X = 1e15 * np.array([1.0, 1.0004, 0.9997]) + rng.normal(size=(20_000, 3)) * [1, 10, 0.1]
    y = -3e15 + X @ np.array([0.3, -1.7, 2.1]) + rng.normal(size=20_000)
    result = stablefit.fit(X, y)
    achieved = achieved_digits(X, y, result.params)
    claimed = np.array(result.certificate.digits_per_coef)
    assert np.all(claimed <= achieved), (claimed, achieved)
    assert np.all(achieved >= 13) and np.all(claimed >= 11), (claimed, achieved)


def exact_polynomial(x: np.ndarray, coefficients: list[int]) -> np.ndarray:
    """Integer-valued y = Σ c_p x^p, exactly representable (checked)."""
    values = [sum(c * int(v) ** p for p, c in enumerate(coefficients)) for v in x]
    assert all(abs(v) < 2**53 for v in values)
    return np.array(values, dtype=np.float64)


def test_intercept_of_a_polynomial_far_from_zero_has_every_digit():
    """Issue 14: degree 5 on x = 1000…1020, zero residual. The intercept is the value at
    x = 0, where centering cancels: it once had 8 correct digits and a claim of 2."""
    coefficients = [3, -2, 5, 1, -1, 2]
    x = np.arange(1000.0, 1021.0)
    result = stablefit.fit_polynomial(x, exact_polynomial(x, coefficients), 5)
    assert result.params.tolist() == coefficients
    assert result.certificate.digits_per_coef == (15,) * 6


def test_intercept_far_from_zero_in_double_double_is_not_overstated():
    """The same polynomial on 6,000 rows (x = 1000…1020 in steps of 1/256), beyond exact
    refinement: the bound on the double-double residuals' rounding (a worst case) vouches
    for fewer digits of the intercept than it has. The certificate must not claim more
    than the exact solution confirms, and a note names what it could not vouch for."""
    x = 1000.0 + np.arange(6000) / 256
    coefficients = [3, -2, 5, 1, -1, 2]
    y = sum(c * x**p for p, c in enumerate(coefficients))  # the data as given: rounded
    result = stablefit.fit_polynomial(x, y, 5)
    powers = [x**0] + [np.array([Fraction(v) ** p for v in x]) for p in range(1, 6)]
    reference = exact_fit(powers, y).solution
    achieved = [digits_achieved(b, r, 1.0) for b, r in zip(result.params, reference, strict=True)]
    claimed = result.certificate.digits_per_coef
    assert all(c <= a for c, a in zip(claimed, achieved, strict=True)), (claimed, achieved)
    assert min(achieved) >= 14
    if claimed[0] < 13:
        assert any("intercept (" in note and "far from zero" in note for note in result.notes)


def fit_through_the_command_line(path, tmp_path, features) -> tuple[np.ndarray, list, list]:
    out = tmp_path / "fit.json"
    assert main(["fit", str(path), "--target", "y", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    params = [report["intercept"]["coef"]] + [report["features"][x]["coef"] for x in features]
    return np.array(params), report["certificate"]["digits_per_coef"], report["notes"]


def test_parquet_uint64_and_int64_near_2_to_the_63_through_the_command_line(tmp_path):
    """Integers float64 holds exactly (multiples of 1024 near 2^62 and 2^63): every digit
    against the file's own integers, in rational arithmetic."""
    rng = np.random.default_rng(5)
    n = 60
    u = np.uint64(2**62) + rng.integers(0, 2**30, n).astype(np.uint64) * np.uint64(1024)
    v = np.int64(2**63 - 2**41) + rng.integers(0, 2**30, n).astype(np.int64) * np.int64(1024)
    x = rng.normal(size=n)
    y = 3 * (u - u.min()).astype(float) / 2**40 - (v - v.min()).astype(float) / 2**40 + x
    y = y + rng.normal(size=n)
    path = tmp_path / "ids.parquet"
    pq.write_table(pa.table({"u": u, "v": v, "x": x, "y": y}), path)
    params, claimed, _ = fit_through_the_command_line(path, tmp_path, ["u", "v", "x"])
    integers = [[int(a) for a in u], [int(a) for a in v]]
    reference = exact_fit([np.ones(n), *integers, x], y).solution
    achieved = np.array(
        [digits_achieved(b, r, 1.0) for b, r in zip(params, reference, strict=True)]
    )
    assert np.all(achieved >= 14), achieved
    assert np.all(np.array(claimed) <= achieved + 1), (claimed, achieved)


def test_integers_float64_cannot_hold_are_named_in_a_note(tmp_path):
    """Integers near 2^62 one apart: float64 rounds them to multiples of 1024 as they are
    read. The digits claimed hold for the values as read, and a note says how far the
    file's integers may be from them."""
    rng = np.random.default_rng(6)
    n = 60
    u = np.uint64(2**62) + rng.integers(0, 2**20, n).astype(np.uint64)
    x = rng.normal(size=n)
    y = 3.0 * (u - u.min()).astype(float) / 2**20 + x + rng.normal(size=n)
    path = tmp_path / "counters.parquet"
    pq.write_table(pa.table({"u": u, "x": x, "y": y}), path)
    params, claimed, notes = fit_through_the_command_line(path, tmp_path, ["u", "x"])
    read = [u.astype(float), x]
    reference = exact_fit([np.ones(n), *read], y).solution
    achieved = np.array(
        [digits_achieved(b, r, 1.0) for b, r in zip(params, reference, strict=True)]
    )
    assert np.all(np.array(claimed) <= achieved + 1), (claimed, achieved)
    (note,) = [note for note in notes if "Column 'u'" in note]
    assert "beyond 2^53" in note and "multiple of 1024" in note and "up to 512" in note


def test_integers_that_float64_rounds_to_one_value_are_named_in_a_note(tmp_path):
    """Ids 2^62 + i and a target 2^63 - 1 - i, one apart in the file: float64 reads each
    column as one value. The fit then reported a constant target and a constant feature
    without a word about the rounding that made them so."""
    rows = [f"{0.5 * i - 3.0!r},{2**62 + i},{2**63 - 1 - i}" for i in range(20)]
    (path := tmp_path / "ids.csv").write_text("x,id,y\n" + "\n".join(rows) + "\n")
    notes = stablefit.fit(path, target="y").notes
    for name, value, spacing in (("id", "4.612e+18", 1024), ("y", "9.223e+18", 2048)):
        (note,) = [note for note in notes if f"Column '{name}'" in note]
        assert f"reads as one value, {value}, beyond 2^53" in note, note
        assert f"multiple of {spacing}:" in note and "constant here even if it is not" in note


def test_a_column_left_out_beyond_rounding_is_said_to_be_with_how_to_fit_it():
    """Two columns near 1e15 without an intercept: b's sine to a is 4e-14, below the
    solver's 1e-13, so b is left out. The values are exact, so the exact fit keeps b
    (coefficients near ±2.4, not 4e-14 and 0): the note said 'collinear to within rounding'
    and the certificate '15 trusted digits' with no word of which fit. The reparametrized
    fit the note proposes gives the exact coefficients, checked in rational arithmetic."""
    rng = np.random.default_rng(0)
    u, v = rng.integers(0, 100, (2, 40)).astype(float)
    X = np.column_stack([1e15 + u, 1e15 + v])
    y = 3 * u - 2 * v + rng.integers(-5, 5, 40)
    result = stablefit.fit(X, y, intercept=False)
    assert [d.name for d in result.dropped] == ["x1"]
    note = next(note for note in result.notes if "'x1'" in note)
    assert "'x1' is nearly collinear" in note and "within rounding" not in note
    assert "replace 'x1' by its difference from that combination, x1 - (1·x0)" in note
    summary = str(result.summary())
    assert "trusted digits of the fit without 'x1'" in summary
    assert "cond. no. 1 without 'x1'" in summary  # that of the columns fitted
    # What is certified is the fit without x1, to the digits claimed.
    kept_exact = exact_fit([X[:, 0]], y).solution[0]
    assert digits_achieved(result.coef[0], kept_exact, 1.0) >= result.certificate.digits
    exact = exact_fit([X[:, 0], X[:, 1]], y).solution
    assert abs(float(exact[1])) > 1.0  # the fit that keeps x1 is another one
    refit = stablefit.fit(np.column_stack([X[:, 0], X[:, 1] - X[:, 0]]), y, intercept=False)
    assert not refit.dropped
    achieved = [digits_achieved(refit.coef[0], exact[0] + exact[1], 1.0)]
    achieved += [digits_achieved(refit.coef[1], exact[1], 1.0)]
    assert min(achieved) >= refit.certificate.digits >= 13, (achieved, refit.certificate)
    # Columns computed from others, far from zero and centered by the intercept, are still
    # collinear to within rounding: their sines (near 4e-14) are what rounding explains.
    x = rng.normal(size=(40, 2)) * [1.0, 1e3] + [0.0, 1e6]
    rounded = stablefit.fit(np.column_stack([x, x[:, 0] + x[:, 1]]), rng.normal(size=40))
    assert [d.name for d in rounded.dropped] == ["x2"]
    assert "'x2' is collinear with the columns before it to within rounding" in rounded.notes[0]
