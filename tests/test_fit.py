"""stablefit.fit: agreement with statsmodels, missing values, collinearity, bad input."""

from __future__ import annotations

import re
import warnings
from fractions import Fraction

import mpmath
import numpy as np
import pandas as pd
import polars as pl
import pytest
import statsmodels.api as sm

import stablefit
from stablefit.errors import StablefitInputError, StablefitWarning


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("intercept", [True, False])
def test_agrees_with_statsmodels_ols(seed, intercept):
    rng = np.random.default_rng(seed)
    n, d = rng.integers(30, 400), rng.integers(1, 8)
    X = rng.normal(size=(n, d)) * rng.uniform(0.1, 10, size=d) + rng.normal(size=d)
    y = X @ rng.normal(size=d) + rng.normal(size=n) + (3.0 if intercept else 0.0)
    ours = stablefit.fit(X, y, intercept=intercept)
    theirs = sm.OLS(y, sm.add_constant(X) if intercept else X).fit()
    np.testing.assert_allclose(ours.params, theirs.params, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours.bse, theirs.bse, rtol=1e-10)
    np.testing.assert_allclose(
        ours.pvalues, theirs.pvalues[int(intercept) :], rtol=1e-8, atol=1e-300
    )
    np.testing.assert_allclose(
        ours.conf_int(include_intercept=True), theirs.conf_int(), rtol=1e-10, atol=1e-12
    )
    assert ours.rsquared == pytest.approx(theirs.rsquared, rel=1e-10)
    assert ours.resid_std == pytest.approx(np.sqrt(theirs.scale), rel=1e-10)
    assert ours.df_resid == theirs.df_resid


def test_seed_example_collinearity_is_named_and_exact_fit_found():
    X = np.array([[1.0, 1e6], [2.0, 2e6], [3.0, 3e6]])
    result = stablefit.fit(X, [10.0, 20.0, 30.0], feature_names=["x1", "x2"])
    assert [d.name for d in result.dropped] == ["x2"]
    assert result.dropped[0].relation == "x2 = 1e+06·x1"
    assert result.coef[0] == pytest.approx(10.0, rel=1e-15)
    assert result.intercept == pytest.approx(0.0, abs=1e-13)
    assert any("x2" in note and "collinear" in note for note in result.notes)
    assert result.to_dict()["dropped_features"] == {"x2": "x2 = 1e+06·x1"}


def test_a_combination_with_negative_terms_is_written_with_minus_signs():
    """'c = 2·a + -3·b + -0.5' before."""
    rng = np.random.default_rng(8)
    a, b = rng.normal(size=40), rng.normal(size=40)
    X = np.column_stack([a, b, 2 * a - 3 * b - 0.5])
    result = stablefit.fit(X, a + b + rng.normal(size=40), feature_names=["a", "b", "c"])
    assert [d.relation for d in result.dropped] == ["c = 2·a - 3·b - 0.5"]


def test_a_column_collinear_up_to_rounding_is_not_called_exactly_collinear():
    """c = a + b computed in float64 differs from a + b in its last bits on most rows: the
    note called it 'exactly collinear' and the certificate's 15 digits read as digits of the
    exact fit of all three columns, whose coefficients are those roundings' noise."""
    rng = np.random.default_rng(8)
    a, b = rng.normal(size=40), rng.normal(size=40)
    c = a + b
    assert any(
        Fraction(ci) != Fraction(ai) + Fraction(bi) for ai, bi, ci in zip(a, b, c, strict=True)
    )
    y = a - b + rng.normal(size=40)
    result = stablefit.fit(np.column_stack([a, b, c]), y, feature_names=["a", "b", "c"])
    assert [d.relation for d in result.dropped] == ["c = 1·a + 1·b"]
    (note,) = [n for n in result.notes if "'c'" in n]
    assert "exactly" not in note and "to within rounding" in note
    assert "the certificate is that of the fit without it" in note
    without = stablefit.fit(np.column_stack([a, b]), y)
    np.testing.assert_array_equal(result.params[:3], without.params)
    assert result.certificate.digits_per_coef[:3] == without.certificate.digits_per_coef


def test_constant_column_is_left_out_with_its_value():
    rng = np.random.default_rng(1)
    X = np.column_stack([rng.normal(size=50), np.full(50, 7.0)])
    result = stablefit.fit(X, X[:, 0] * 2 + 1, feature_names=["a", "k"])
    assert result.dropped[0].relation == "k = 7"


def test_near_collinear_but_identifiable_columns_are_kept():
    rng = np.random.default_rng(2)
    a = rng.normal(size=200)
    b = a + 1e-7 * rng.normal(size=200)
    y = a + 2 * b + 0.01 * rng.normal(size=200)
    result = stablefit.fit(np.column_stack([a, b]), y)
    assert result.dropped == ()
    mpmath.mp.dps = 60  # the reference: normal equations in 60-digit arithmetic
    A = mpmath.matrix(np.column_stack([np.ones(200), a, b]).tolist())
    exact = mpmath.lu_solve(A.T * A, A.T * mpmath.matrix(y.tolist()))
    assert result.certificate.condition_number > 1e6
    for estimate, reference, digits in zip(
        result.params, exact, result.certificate.digits_per_coef, strict=True
    ):
        assert digits >= 13
        assert abs(estimate - reference) <= 10.0**-digits * abs(reference)


def _near_collinear(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer columns in pairs that differ by -1, 0 or 1 on a scale of 2^30 (κ ≈ 1e10),
    rows in identical pairs with opposite noise: the exact solution is the integer
    [intercept, coef] the target was made from."""
    rng = np.random.default_rng(seed)
    half = rows // 2
    base = rng.integers(-(2**30), 2**30, size=(half, 3)).astype(float)
    X = np.repeat(base, 2, axis=1) + np.tile([0.0, 1.0], 3) * rng.integers(-1, 2, size=(half, 6))
    exact = rng.integers(-100, 101, size=7).astype(float)
    noise = rng.integers(-(2**20), 2**20, size=half).astype(float)
    y = np.repeat(X @ exact[1:] + exact[0], 2) + np.column_stack([noise, -noise]).ravel()
    return np.repeat(X, 2, axis=0), y, exact


def test_the_first_batch_tells_when_the_co_moments_cannot_precondition():
    from stablefit.pipeline import _comoments_may_precondition
    from stablefit.summary.comoments import CoMoments

    def first_batch(X, y):
        return CoMoments.of_block(np.column_stack([X, y]))

    X, y, _ = _near_collinear(2000, 0)
    assert not _comoments_may_precondition(first_batch(X, y))
    rng = np.random.default_rng(1)
    well = rng.normal(size=(2000, 6))
    assert _comoments_may_precondition(first_batch(well, y))
    # Rows sorted so that a column does not vary at first: the batch cannot tell.
    X[:, 2] = 5.0
    assert _comoments_may_precondition(first_batch(X, y))


def test_a_fit_that_skips_the_cross_products_loses_nothing(monkeypatch):
    from stablefit import pipeline
    from stablefit.io import ArraySource, Schema

    # Blocks of 5,000 rows: LAPACK's blocked QR (dtpqrt), not the one for small blocks.
    X, y, exact = _near_collinear(15_000, 2)
    schema = Schema(feature_names=tuple(f"x{j}" for j in range(6)), target_name="y")
    skipped = pipeline.fit_source(ArraySource(X, y, schema, batch_rows=5000))
    monkeypatch.setattr(pipeline, "FIRST_BATCH_CONDITION_LIMIT", np.inf)
    formed = pipeline.fit_source(ArraySource(X, y, schema, batch_rows=5000))
    assert skipped.certificate.condition_number > 1e8
    assert skipped.certificate == formed.certificate
    digits = np.array(skipped.certificate.digits_per_coef)
    assert digits.min() >= 12
    assert np.all(np.abs(skipped.params - exact) <= 10.0**-digits * np.abs(exact))
    np.testing.assert_array_equal(skipped.params, formed.params)
    np.testing.assert_array_equal(skipped.bse, formed.bse)


def test_large_offset_timestamp_column():
    rng = np.random.default_rng(3)
    t = 1.7e9 + np.sort(rng.uniform(0, 86400, size=500))
    y = 3e-4 * (t - 1.7e9) + 5 + rng.normal(size=500)
    result = stablefit.fit(t[:, None], y)
    theirs = sm.OLS(y, sm.add_constant(t - 1.7e9)).fit()
    assert result.coef[0] == pytest.approx(theirs.params[1], rel=1e-11)
    assert result.intercept == pytest.approx(theirs.params[0] - theirs.params[1] * 1.7e9, rel=1e-9)


def test_missing_error_names_columns_rows_and_options():
    X = np.arange(20.0).reshape(10, 2)
    X[[2, 5], 1] = np.nan
    y = np.arange(10.0)
    y[7] = np.inf
    with pytest.raises(StablefitInputError) as error:
        stablefit.fit(X, y, feature_names=["a", "b"])
    message = str(error.value)
    assert "'b' has 2 NaN (rows 2, 5)" in message
    assert "'y' has 1 inf (row 7)" in message
    assert "missing='drop'" in message and "missing='impute'" in message


def test_missing_drop_counts_rows_and_matches_clean_fit():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(100, 2))
    y = X @ [1.0, 2.0] + rng.normal(size=100)
    Xn = X.copy()
    Xn[[3, 50], 0] = np.nan
    result = stablefit.fit(Xn, y, missing="drop")
    keep = np.ones(100, bool)
    keep[[3, 50]] = False
    clean = stablefit.fit(X[keep], y[keep])
    assert result.n_dropped_rows == 2 and result.n_obs == 98
    np.testing.assert_allclose(result.params, clean.params, rtol=1e-13)
    assert any("2 rows" in note for note in result.notes)
    one = stablefit.fit(Xn[4:], y[4:], missing="drop")
    assert any("1 row with NaN or inf was left out" in note for note in one.notes)


def test_missing_impute_uses_column_median():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(60, 2))
    y = X @ [1.0, 2.0] + rng.normal(size=60)
    Xn = X.copy()
    Xn[[1, 2], 1] = np.nan
    result = stablefit.fit(Xn, y, missing="impute")
    filled = Xn.copy()
    filled[[1, 2], 1] = np.median(X[np.isfinite(Xn[:, 1]), 1])
    np.testing.assert_allclose(result.params, stablefit.fit(filled, y).params, rtol=1e-12)
    assert result.n_imputed_values == 2


def test_input_is_not_modified():
    X = np.array([[1.0, np.nan], [2.0, 1.0], [3.0, 4.0], [4.0, 2.0]])
    y = np.array([1.0, 2.0, 3.0, 5.0])
    before_X, before_y = X.copy(), y.copy()
    stablefit.fit(X, y, missing="impute")
    np.testing.assert_array_equal(X, before_X)
    np.testing.assert_array_equal(y, before_y)


@pytest.mark.parametrize(
    ("X", "y", "match"),
    [
        (np.ones((1, 1)), np.ones(1), "only 1 sample"),
        (np.array([[1.0], [1e308], [2.0]]), np.ones(3), "'x0' holds 1e\\+308 at row 1: its square"),
        (np.ones((3, 2)), None, "no target"),
        (np.ones((3, 1)), np.ones(3), None),
    ],
)
def test_bad_input_gets_a_precise_error(X, y, match):
    if match is None:
        result = stablefit.fit(X, y)  # a constant feature: reported, not an error
        assert result.dropped and result.dropped[0].name == "x0"
        return
    with pytest.raises(StablefitInputError, match=match):
        stablefit.fit(X, y)


def test_fit_from_csv_file_by_target_name(tmp_path):
    rng = np.random.default_rng(6)
    frame = pd.DataFrame({"size": rng.uniform(50, 200, 80), "rooms": rng.integers(1, 6, 80)})
    frame["price"] = 1000 * frame["size"] + 5000 * frame["rooms"] + rng.normal(0, 100, 80)
    path = tmp_path / "houses.csv"
    frame.to_csv(path, index=False)
    result = stablefit.fit(path, target="price")
    theirs = sm.OLS(frame["price"], sm.add_constant(frame[["size", "rooms"]])).fit()
    assert result.feature_names == ("size", "rooms")
    np.testing.assert_allclose(result.params, theirs.params, rtol=1e-10)
    assert set(result.to_dict()["features"]) == {"size", "rooms"}


def test_summary_text_lists_every_feature_and_the_certificate():
    X = np.array([[1.0, 2.0], [2.0, 1.0], [3.0, 5.0], [4.0, 3.0], [5.0, 8.0]])
    result = stablefit.fit(X, [1.0, 2.0, 2.5, 4.0, 6.0], feature_names=["alpha", "beta"])
    text = str(result.summary())
    html = result.summary().as_html()
    for word in ("intercept", "alpha", "beta", "trusted digits", "R²"):
        assert word in text
        assert word in html
    assert html.count("<tr>") == 4  # the header and three parameters


def test_summary_of_an_exact_fit_prints_an_infinite_t_beside_its_p_value():
    # Zero residuals: each nonzero coefficient has t = inf and a p-value below any level;
    # the table must not show a dash beside that p-value.
    result = stablefit.fit([[1.0], [2.0], [3.0], [4.0]], [7.0, 9.0, 11.0, 13.0])
    assert result.resid_std == 0.0
    rows = str(result.summary()).splitlines()
    for name in ("intercept", "x0"):
        cells = next(line for line in rows if line.startswith(f"{name} ")).split()
        assert cells[3] == "inf" and cells[4] == "<1e-04"


@pytest.mark.parametrize(
    ("X", "y", "undefined"),
    [
        # a constant target: nothing to explain (statsmodels: R², adj. R², F all NaN)
        ([[1.0], [2.0], [3.0], [4.0]], [5.0, 5.0, 5.0, 5.0],
         ["R² undefined (the target is constant)", "adj. R² undefined (the target is constant)",
          "F undefined (the target is constant)"]),
        # as many coefficients as rows: nothing left for the residuals
        ([[1.0, 2.0], [2.0, 1.0], [3.0, 5.0]], [3.5, 4.0, 9.25],
         ["adj. R² undefined (no residual degrees of freedom)",
          "residual SD undefined (no residual degrees of freedom)",
          "F undefined (no residual degrees of freedom)"]),
        # the one feature constant: no slope for F to test
        ([[1.0], [1.0], [1.0], [1.0]], [5.0, 6.0, 3.0, 5.0],
         ["F undefined (no coefficient besides the intercept)"]),
    ],
)  # fmt: skip
def test_summary_says_why_a_figure_is_undefined_instead_of_printing_nan(X, y, undefined):
    result = stablefit.fit(X, y)
    frame = pd.DataFrame(X, columns=result.feature_names)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels: "the design matrix is rank-deficient"
        reference = sm.OLS(np.asarray(y), sm.add_constant(frame, has_constant="add")).fit()
        figures = [reference.rsquared, reference.rsquared_adj, reference.fvalue]
    np.testing.assert_array_equal(np.isnan([result.rsquared, result.rsquared_adj,
                                            result.fvalue]), np.isnan(figures))  # fmt: skip
    text, html = str(result.summary()), result.summary().as_html()
    for phrase in undefined:
        assert phrase in text and phrase in html
    for shown in (text, html):
        assert not re.search(r"(=|\bp =)\s*nan", shown, re.IGNORECASE), shown
    written = result.to_dict()  # each null of a figure with its reason beside it
    figures = ("rsquared", "rsquared_adj", "resid_std", "fvalue", "f_pvalue", "llf", "aic", "bic")
    nulls = {name for name in figures if written[name] is None}
    assert nulls and nulls == set(written["undefined"]), (nulls, written["undefined"])


def test_a_coefficient_that_cannot_be_told_from_zero_has_its_bound_in_the_note():
    # y = 10 x through the origin: the intercept comes back as rounding noise, which has no
    # significant digit; the note says how close to zero it is (the true value is 0).
    result = stablefit.fit([[1.0], [2.0], [3.0]], [10.0, 20.0, 30.0])
    intercept, digits = result.params[0], result.certificate.digits_per_coef[0]
    assert intercept != 0.0 and digits == 0
    (note,) = [n for n in result.notes if "can be trusted" in n]
    bound = float(note.split("zero to within ")[1].split(")")[0])
    assert abs(intercept) <= bound <= 1e-30


def test_the_headline_counts_the_digits_of_the_coefficients_that_are_not_rounding_noise():
    # The intercept of y = 10 x is rounding noise around its true value 0: it has no digit,
    # but the slope has all of them, and the headline says so with the intercept's bound.
    result = stablefit.fit([[1.0], [2.0], [3.0]], [10.0, 20.0, 30.0])
    cert = result.certificate
    assert cert.zeros == (0,) and cert.digits == 0
    assert cert.digits_apart_from_zeros == cert.digits_per_coef[1] >= 13
    assert abs(result.params[0]) <= cert.error_bounds[0] <= 1e-30
    text, html = str(result.summary()), result.summary().as_html()
    headline = next(line for line in text.splitlines() if line.startswith("certificate:"))
    expected = f"{cert.digits_per_coef[1]} trusted digits (intercept zero to within "
    assert headline.startswith(f"certificate: {expected}")
    assert expected in html
    exact = [note for note in result.notes if "residuals are zero to within" in note]
    assert len(exact) == 1 and "carry no information" in exact[0]


def test_an_inexact_fit_has_no_zeros_and_no_exact_fit_note():
    result = stablefit.fit([[1.0], [2.0], [3.0], [4.0]], [1.0, 3.0, 2.0, 5.5])
    assert result.certificate.zeros == ()
    assert result.certificate.digits_apart_from_zeros == result.certificate.digits
    assert not [note for note in result.notes if "residuals are zero" in note]


def test_polynomial_rejects_bad_degree_and_nan():
    with pytest.raises(StablefitInputError, match="degree"):
        stablefit.fit_polynomial([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], degree=0)
    with pytest.raises(StablefitInputError, match="at row 1;"):
        stablefit.fit_polynomial([1.0, np.nan, 3.0], [1.0, 2.0, 3.0], degree=1)
    # Two columns were flattened into one x of twice the rows: 'x has 6 values and y has 3'.
    with pytest.raises(StablefitInputError, match=r"x has shape \(3, 2\); a polynomial is of one"):
        stablefit.fit_polynomial(np.ones((3, 2)), [1.0, 2.0, 3.0], degree=1)
    with pytest.raises(StablefitInputError, match="x holds text"):
        stablefit.fit_polynomial(["1", "b", "3"], [1.0, 2.0, 3.0], degree=1)
    column = stablefit.fit_polynomial(np.array([[1.0], [2.0], [4.0]]), [1.0, 2.0, 3.0], degree=1)
    np.testing.assert_allclose(column.params, np.polyfit([1.0, 2.0, 4.0], [1, 2, 3], 1)[::-1])


@pytest.mark.parametrize("intercept", [True, False])
def test_a_target_in_the_subnormal_range_is_refused_not_called_zero(intercept):
    """y near 1e-322: its squares underflowed to 0, and the fit said 'R² undefined (the
    target is 0)', log-likelihood inf, and a coefficient with no trusted digit."""
    rng = np.random.default_rng(6)
    X = rng.normal(size=(20, 2))
    y = 1e-322 * np.round(rng.normal(size=20) * 3)
    with pytest.raises(StablefitInputError, match=r"the target 'y' holds values .* subnormal"):
        stablefit.fit(X, y, intercept=intercept)


def test_a_prediction_without_a_value_is_never_silent():
    """predict() returned NaN and inf for rows with a NaN, an inf, or features whose
    prediction overflows, without a word."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(40, 2))
    result = stablefit.fit(X, X @ [1.0, 2.0] + rng.normal(size=40))
    new = np.array([[1.0, 2.0], [np.nan, 1.0], [1.0, -np.inf], [1e308, 1e308]])
    expected = (
        r"3 of 4 rows have no finite prediction( or standard error)?: 2 with a missing or "
        r"infinite feature value \(rows 1, 2\); 1 whose prediction( or standard error)? "
        r"overflows a double.*\(row 3: rescale"
    )
    for predict in (result.predict, lambda x: result.get_prediction(x).predicted):
        with pytest.warns(StablefitWarning, match=expected):
            predicted = predict(new)
        assert np.isfinite(predicted[0]) and not np.isfinite(predicted[1:]).any()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            predict(new[:1])


def test_predict_takes_a_tables_features_by_name_in_any_order():
    """A DataFrame with the features in another order was predicted by position: other
    numbers, silently."""
    rng = np.random.default_rng(4)
    frame = pd.DataFrame(rng.normal(size=(30, 3)), columns=["a b", "c,d", "列"])
    result = stablefit.fit(frame, frame @ [1.0, -2.0, 3.0] + rng.normal(size=30))
    expected = frame.to_numpy() @ result.coef + result.intercept
    shuffled = frame[["列", "a b", "c,d"]].assign(other=1.0)
    np.testing.assert_allclose(result.predict(shuffled), expected, rtol=1e-13)
    np.testing.assert_allclose(result.predict(pl.from_pandas(shuffled)), expected, rtol=1e-13)
    by_name, in_order = result.get_prediction(shuffled), result.get_prediction(frame.to_numpy())
    np.testing.assert_array_equal(by_name.se_mean, in_order.se_mean)
    with pytest.raises(StablefitInputError, match=r"missing column\(s\) '列'"):
        result.predict(frame[["a b", "c,d"]])
    with pytest.raises(StablefitInputError, match=r"X is a path \('new.csv'\)"):
        result.predict("new.csv")
    # Fitted on an array (names x0, x1, x2): a table's columns are taken in order.
    from_array = stablefit.fit(frame.to_numpy(), frame @ [1.0, -2.0, 3.0])
    np.testing.assert_array_equal(from_array.predict(frame), from_array.predict(frame.to_numpy()))
