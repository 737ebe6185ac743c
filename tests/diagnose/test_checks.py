"""Each data check against data with a planted hazard, and against data without it."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

import stablefit
from stablefit.diagnose.checks import CheckOptions, run_checks
from stablefit.diagnose.checks.collinearity import (
    check_collinearity,
    check_constant,
    check_exact_target,
    check_rows_vs_rank,
)
from stablefit.diagnose.checks.missing import (
    check_empty_columns,
    check_no_complete_rows,
    check_nonfinite,
    check_target_present,
)
from stablefit.diagnose.checks.outliers import check_outliers
from stablefit.diagnose.checks.precision import (
    check_batch_overflow,
    check_integer_range,
    check_out_of_range,
    check_resolution,
    check_square_overflow,
)
from stablefit.diagnose.checks.scale import check_offsets, check_scale_spread, check_target_scale
from stablefit.diagnose.findings import Finding, format_number, sort_findings
from stablefit.summary import Summary

SEED_X1 = np.array([[1, 1e6], [2, 2e6], [3, 3e6]])
SEED_Y1 = np.array([10.0, 20.0, 30.0])
SEED_X3 = np.array([[1, 10], [2, 20], [3, 30], [4, 1e6]])
SEED_Y3 = np.array([10.0, 20.0, 30.0, 40.0])


def summary_of(X, y=None, names=None) -> Summary:
    X = np.asarray(X, dtype=float)
    return Summary.from_arrays(
        X, None if y is None else np.asarray(y, dtype=float), feature_names=names
    )


def codes(findings: list[Finding]) -> list[str]:
    return [f.code for f in findings]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20250130)


# -- the seed's examples --------------------------------------------------------------------


def test_seed_example1_collinearity_exact_target_and_scale_spread():
    findings = run_checks(summary_of(SEED_X1, SEED_Y1, ["x1", "x2"]))
    (collinear,) = [f for f in findings if f.code == "SF113"]
    assert collinear.evidence["column"] == "x2"
    assert collinear.evidence["terms"]["x1"] == pytest.approx(1e6, rel=1e-12)
    assert collinear.evidence["constant"] == 0.0
    assert "x2 = 1e6·x1" in collinear.message
    (exact,) = [f for f in findings if f.code == "SF115"]
    assert exact.evidence["terms"] == {"x1": pytest.approx(10.0, rel=1e-12)}
    assert "y = 10·x1" in exact.message
    (spread,) = [f for f in findings if f.code == "SF121"]
    assert spread.evidence["ratio"] == pytest.approx(1e6, rel=1e-9)
    assert (spread.evidence["largest"], spread.evidence["smallest"]) == ("x2", "x1")
    # 3 rows but only 2 independent parameters: not an interpolation of any target.
    assert "SF105" not in codes(findings)
    assert not any(f.severity == "error" for f in findings)


def test_seed_example3_outlier_row_and_leverage():
    findings = check_outliers(summary_of(SEED_X3, SEED_Y3, ["x1", "x2"]))
    (outliers,) = findings
    assert outliers.code == "SF141"
    (column,) = outliers.evidence["columns"]
    assert column["column"] == "x2"
    assert column["rows"] == [3]
    assert column["values"] == [1e6]
    assert column["robust_z"][0] > 1e4
    assert column["leverage_lower_bound"][0] == pytest.approx(1.0, abs=1e-4)
    assert "row 3" in outliers.message


# -- missing and non-finite values ----------------------------------------------------------


def test_nan_and_inf_are_counted_by_column_and_row():
    X = np.arange(40, dtype=float).reshape(20, 2)
    X[[4, 9], 0] = np.nan
    X[7, 1] = np.inf
    y = np.arange(20, dtype=float)
    y[12] = -np.inf
    findings = check_nonfinite(summary_of(X, y, ["a", "b"]))
    by_code = {f.code: f for f in findings}
    assert set(by_code) == {"SF101", "SF102"}
    columns = {c["column"]: c for c in by_code["SF101"].evidence["columns"]}
    assert columns["a"]["n_nan"] == 2 and columns["a"]["rows"] == [4, 9]
    assert columns["b"]["n_inf"] == 1 and columns["b"]["rows"] == [7]
    assert by_code["SF102"].evidence["columns"][0]["rows"] == [12]
    assert all(f.severity == "error" for f in findings)


def test_clean_data_has_no_nonfinite_findings(rng):
    assert check_nonfinite(summary_of(rng.normal(size=(50, 3)), rng.normal(size=50))) == []


def test_all_nan_column_is_empty_and_leaves_no_complete_row(rng):
    X = rng.normal(size=(10, 2))
    X[:, 1] = np.nan
    summary = summary_of(X, rng.normal(size=10), ["ok", "gone"])
    (empty,) = check_empty_columns(summary)
    assert empty.code == "SF103" and empty.evidence["columns"] == ["gone"]
    (none,) = check_no_complete_rows(summary)
    assert none.code == "SF104" and none.severity == "error"
    assert check_empty_columns(summary_of(X[:, :1], rng.normal(size=10))) == []


def test_single_row_is_flagged_as_too_few_rows():
    (few,) = check_rows_vs_rank(summary_of([[1.0, 2.0]], [3.0]))
    assert few.code == "SF105"
    assert few.evidence["n_complete_rows"] == 1


def test_enough_rows_are_not_flagged(rng):
    assert check_rows_vs_rank(summary_of(rng.normal(size=(10, 2)), rng.normal(size=10))) == []


def test_missing_target_is_noted(rng):
    (note,) = check_target_present(summary_of(rng.normal(size=(5, 2))))
    assert note.code == "SF106" and note.severity == "info"
    assert check_target_present(summary_of(rng.normal(size=(5, 2)), rng.normal(size=5))) == []


# -- constant, duplicate, collinear -----------------------------------------------------------


def test_constant_column_named_with_its_value(rng):
    X = rng.normal(size=(30, 3))
    X[:, 1] = 7.5
    (constant,) = check_constant(summary_of(X, rng.normal(size=30), ["a", "b", "c"]))
    assert constant.code == "SF111" and constant.severity == "warning"
    assert constant.evidence["columns"] == ["b"]
    assert constant.evidence["values"] == {"b": 7.5}
    (without_bias,) = check_constant(
        summary_of(X, rng.normal(size=30), ["a", "b", "c"]), CheckOptions(intercept=False)
    )
    assert without_bias.severity == "info"


def test_a_column_below_float32s_normal_range_is_named_with_the_bits_it_keeps(rng):
    """Values near 1e-41 keep 14 bits in float32 and values near 1e-50 become 0 there; the
    doctor said nothing, or told to subtract an offset (SF134)."""
    X = np.column_stack(
        [rng.normal(size=40), rng.normal(size=40) * 1e-41, rng.normal(size=40) * 1e-50]
    )
    y = X[:, 0] + rng.normal(size=40)
    findings = run_checks(summary_of(X, y, ["a", "tiny", "gone"]))
    (finding,) = [f for f in findings if f.code == "SF136"]
    bits = {c["column"]: c["bits"] for c in finding.evidence["columns"]}
    assert bits["gone"] == 0 and 12 <= bits["tiny"] <= 15 and "a" not in bits
    assert np.float32(1e-50) == 0 and "Multiply tiny and gone by a power of ten" in finding.fix
    assert not [f for f in findings if f.code == "SF134"]
    float64 = run_checks(summary_of(X, y, ["a", "tiny", "gone"]), CheckOptions(dtype="float64"))
    assert not [f for f in float64 if f.code == "SF136"]


def test_values_near_1e_minus_300_are_not_called_constant(rng):
    """The squares of their spread underflow float64, so their sum of squared deviations
    is 0: the doctor said 'x never changes' of values that all differ."""
    X = rng.normal(size=(30, 2))
    X[:, 0] *= 1e-301
    y = 1e-322 * np.arange(30.0)  # subnormal, and differing
    assert check_constant(summary_of(X, y, ["tiny", "b"])) == []


def test_a_column_float64_rounds_to_one_value_says_the_rounding_may_be_why(rng, tmp_path):
    """Ids 2^62 + i and a target 2^63 - 1 - i read as one float64 value each: the doctor
    called them constant without a word about the rounding."""
    rows = [f"{float(v)!r},{2**62 + i},{2**63 - 1 - i}" for i, v in enumerate(rng.normal(size=20))]
    (path := tmp_path / "ids.csv").write_text("x,id,y\n" + "\n".join(rows) + "\n")
    findings = [f for f in stablefit.diagnose(str(path), target="y").findings if f.code == "SF111"]
    messages = {f.title: " ".join(f.message.split()) for f in findings}
    assert (
        "multiple of 1024: values in the file that differ by up to 512"
        in messages["Constant feature"]
    )
    assert "multiple of 2048" in messages["Constant target"]
    X = rng.normal(size=(30, 2))
    X[:, 1] = 7.5  # an ordinary constant: no word about rounding
    (constant,) = check_constant(summary_of(X, rng.normal(size=30), ["a", "b"]))
    assert "2^53" not in constant.message


def test_planted_exact_combination_is_recovered_with_coefficients(rng):
    X = rng.normal(size=(200, 4))
    X[:, 3] = 2.0 * X[:, 0] - 3.0 * X[:, 1] + 5.0
    findings = check_collinearity(summary_of(X, rng.normal(size=200), ["a", "b", "c", "d"]))
    (exact,) = [f for f in findings if f.code == "SF113"]
    assert exact.evidence["column"] == "d"
    assert exact.evidence["terms"] == {"b": pytest.approx(-3.0), "a": pytest.approx(2.0)}
    assert exact.evidence["constant"] == pytest.approx(5.0)
    assert exact.evidence["equation"] == "d = -3·b + 2·a + 5"
    assert "c" not in exact.evidence["terms"]


def test_duplicate_column(rng):
    X = rng.normal(size=(50, 3))
    X[:, 2] = X[:, 0]
    findings = check_collinearity(summary_of(X, None, ["a", "b", "copy_of_a"]))
    assert codes(findings) == ["SF112"]
    assert findings[0].evidence["column"] == "copy_of_a"
    assert findings[0].evidence["terms"] == {"a": pytest.approx(1.0)}


def test_near_collinearity_reports_vif_and_combination(rng):
    n = 500
    X = rng.normal(size=(n, 3))
    X[:, 2] = X[:, 0] + X[:, 1] + 1e-3 * rng.normal(size=n)
    findings = check_collinearity(summary_of(X, None, ["a", "b", "c"]))
    assert codes(findings) == ["SF114"]
    near = findings[0]
    assert near.severity == "warning"
    assert near.evidence["max_vif"] > 1e5
    worst = near.evidence["columns"][0]
    assert (
        set(worst["terms"]) == {"a", "b"}
        or set(worst["terms"]) == {"a", "c"}
        or set(worst["terms"]) == {"b", "c"}
    )
    # VIF = 1 / (1 - R²)
    assert worst["vif"] == pytest.approx(1 / (1 - worst["r_squared"]), rel=1e-6)


def test_independent_features_are_not_collinear(rng):
    assert check_collinearity(summary_of(rng.normal(size=(500, 4)))) == []


def test_without_intercept_an_offset_combination_is_not_collinear(rng):
    X = rng.normal(size=(100, 2))
    X[:, 1] = 1.0 - X[:, 0]  # collinear with the bias only
    summary = summary_of(X, rng.normal(size=100))
    assert codes(check_collinearity(summary)) == ["SF113"]
    assert check_collinearity(summary, CheckOptions(intercept=False)) == []


def test_exact_target_only_when_exact(rng):
    X = rng.normal(size=(40, 2))
    assert codes(check_exact_target(summary_of(X, 3 * X[:, 1] - 1))) == ["SF115"]
    noisy = 3 * X[:, 1] - 1 + 1e-2 * rng.normal(size=40)
    assert check_exact_target(summary_of(X, noisy)) == []


# -- scales -----------------------------------------------------------------------------------


def test_scale_spread_threshold(rng):
    X = rng.normal(size=(100, 2))
    assert check_scale_spread(summary_of(X * [1.0, 10.0])) == []
    (spread,) = check_scale_spread(summary_of(X * [1.0, 1e4], None, ["small", "big"]))
    assert spread.evidence["largest"] == "big"
    assert spread.evidence["ratio"] == pytest.approx(1e4 * X[:, 1].std() / X[:, 0].std())


def test_scale_spread_beyond_float64_squared(rng):
    """Scales 1e160 apart: the curvature ratio (1e320) is beyond float64 and is written as
    a square, not an OverflowError (found by the fuzz suite through ``doctor``)."""
    X = rng.normal(size=(20, 2)) * [1e-10, 1e150]
    (spread,) = check_scale_spread(summary_of(X, None, ["small", "big"]))
    assert re.search(r"curvature differs by about \(\d\.?\d*e160\)²", spread.message)


def test_offsets_flag_uncentered_columns(rng):
    X = rng.normal(size=(100, 2))
    X[:, 1] += 1e4
    (offset,) = check_offsets(summary_of(X, None, ["a", "far"]))
    assert offset.evidence["columns"] == ["far"]
    assert check_offsets(summary_of(X), CheckOptions(intercept=False)) == []


def test_target_scale(rng):
    X = rng.normal(size=(50, 1))
    assert check_target_scale(summary_of(X, rng.normal(size=50))) == []
    (large,) = check_target_scale(summary_of(X, 2e5 + rng.normal(size=50)))
    assert large.code == "SF123" and large.evidence["rms"] == pytest.approx(2e5, rel=1e-3)


# -- float32 hazards --------------------------------------------------------------------------


def test_timestamp_offset_beyond_float32_resolution(rng):
    n = 1000
    stamps = 1.7e9 + 60.0 * np.arange(n)
    X = np.column_stack([stamps, rng.normal(size=n)])
    summary = summary_of(X, rng.normal(size=n), ["time", "z"])
    (resolution,) = check_resolution(summary)
    (item,) = resolution.evidence["columns"]
    assert item["column"] == "time"
    assert item["spacing"] == 128.0
    assert item["steps_per_std"] == pytest.approx(stamps.std() / 128.0)
    assert check_resolution(summary, CheckOptions(dtype="float64")) == []
    (integers,) = check_integer_range(summary)
    assert integers.evidence["columns"][0]["column"] == "time"
    assert "inexact in float32" in integers.evidence["columns"][0]["hazards"]


def test_value_beyond_float32_range_is_a_finding_not_an_exception():
    X = np.array([[1.0, 1.0], [2.0, 2.0], [1e308, 3.0], [4.0, 5.0]])
    with np.errstate(over="ignore"):  # the Summary's co-moment of 1e308 overflows float64
        summary = summary_of(X, [1.0, 2.0, 3.0, 4.0], ["a", "b"])
    (beyond,) = check_out_of_range(summary)
    assert beyond.code == "SF131" and beyond.severity == "error"
    assert beyond.evidence["columns"][0]["rows"] == [2]
    assert check_out_of_range(summary, CheckOptions(dtype="float64")) == []
    assert check_square_overflow(summary) == []  # 1e308 is SF131's, not SF132's


def test_squares_overflowing_float32():
    X = np.array([[1.0], [2.0], [-3e19], [4.0]])
    (square,) = check_square_overflow(summary_of(X, [1.0, 2.0, 3.0, 4.0]))
    assert square.code == "SF132"
    assert square.evidence["columns"][0]["rows"] == [2]
    assert check_square_overflow(summary_of(X / 1e3, [1.0, 2.0, 3.0, 4.0])) == []


def test_batch_sum_of_squares_overflow(rng):
    X = 5e18 * rng.normal(size=(200, 1))
    (batch,) = check_batch_overflow(summary_of(X, rng.normal(size=200)))
    assert batch.severity == "warning"
    assert batch.evidence["columns"][0]["rows_to_overflow"] < 32
    assert check_batch_overflow(summary_of(X / 1e3, rng.normal(size=200))) == []


def test_integer_squares_overflow_int64():
    X = np.array([[1.0], [2.0], [4e9]])
    (integers,) = check_integer_range(summary_of(X))
    assert "square overflows int64" in integers.evidence["columns"][0]["hazards"]
    assert check_integer_range(summary_of(X / 1e6)) == []


# -- outliers ---------------------------------------------------------------------------------


def test_planted_outlier_rows_in_features_and_target(rng):
    n = 400
    X = rng.normal(size=(n, 2))
    y = rng.normal(size=n)
    X[17, 0] = 60.0
    X[311, 1] = -45.0
    y[250] = 80.0
    findings = {f.code: f for f in check_outliers(summary_of(X, y, ["a", "b"]))}
    assert set(findings) == {"SF141", "SF142"}
    columns = {c["column"]: c for c in findings["SF141"].evidence["columns"]}
    assert columns["a"]["rows"] == [17]
    assert columns["b"]["rows"] == [311]
    assert findings["SF142"].evidence["rows"] == [250]


def test_gaussian_data_has_no_outliers(rng):
    assert check_outliers(summary_of(rng.normal(size=(2000, 3)), rng.normal(size=2000))) == []


# -- findings and their JSON --------------------------------------------------------------------


def test_finding_validates_code_and_severity():
    with pytest.raises(ValueError, match="SF123"):
        Finding("X1", "error", "t", "m")
    with pytest.raises(ValueError, match="severity"):
        Finding("SF999", "fatal", "t", "m")


def test_evidence_becomes_plain_json():
    finding = Finding(
        "SF999",
        "info",
        "t",
        "m",
        evidence={"a": np.float32(1.5), "rows": np.arange(3), "bad": np.nan, "ok": np.bool_(True)},
    )
    assert json.loads(json.dumps(finding.to_dict(), allow_nan=False))["evidence"] == {
        "a": 1.5,
        "rows": [0, 1, 2],
        "bad": "NaN",
        "ok": True,
    }


def test_sort_puts_errors_first():
    findings = [
        Finding("SF150", "info", "t", "m"),
        Finding("SF140", "error", "t", "m"),
        Finding("SF130", "warning", "t", "m"),
    ]
    assert [f.severity for f in sort_findings(findings)] == ["error", "warning", "info"]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (9.3e12, "9.3e12"),
        (2.14e-13, "2.14e-13"),
        (1e6, "1e6"),
        (20.0, "20"),
        (0.8165, "0.817"),
        (float("nan"), "NaN"),
        (float("inf"), "inf"),
    ],
)
def test_format_number(value, text):
    assert format_number(value) == text
