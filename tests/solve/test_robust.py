"""Covariance types, weights and the regression table against statsmodels.

Every figure statsmodels reports for OLS and WLS with nonrobust, HC0–HC3 and one- and
two-way clustered covariances: to 1e-10 relative on random data and on Grunfeld's panel
(statsmodels' bundled copy), where statsmodels' own answer is that accurate.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

import stablefit

RTOL = 1e-10
COV_TYPES = ["nonrobust", "HC0", "HC1", "HC2", "HC3"]


def assert_table_agrees(ours, theirs, *, intercept: bool = True) -> None:
    """Everything a statsmodels regression table shows, to RTOL."""
    np.testing.assert_allclose(ours.params, theirs.params, rtol=RTOL)
    np.testing.assert_allclose(ours.covariance, theirs.cov_params(), rtol=RTOL, atol=0)
    np.testing.assert_allclose(ours.bse, theirs.bse, rtol=RTOL)
    np.testing.assert_allclose(
        ours.tvalues, np.asarray(theirs.tvalues)[int(intercept) :], rtol=RTOL
    )
    np.testing.assert_allclose(
        ours.pvalues, np.asarray(theirs.pvalues)[int(intercept) :], rtol=1e-8, atol=1e-300
    )
    np.testing.assert_allclose(ours.conf_int(include_intercept=True), theirs.conf_int(), rtol=RTOL)
    for name in ("rsquared", "rsquared_adj", "fvalue", "llf", "aic", "bic", "condition_number"):
        assert getattr(ours, name) == pytest.approx(getattr(theirs, name), rel=RTOL), name
    assert ours.f_pvalue == pytest.approx(theirs.f_pvalue, rel=1e-8)
    assert ours.df_model == theirs.df_model
    assert ours.df_resid == theirs.df_resid
    assert ours.df_inference == getattr(theirs, "df_resid_inference", theirs.df_resid)


def random_problem(seed: int, n: int = 120, d: int = 3):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * rng.uniform(0.5, 5, d) + rng.normal(size=d) * 3
    noise = rng.normal(size=n) * (0.5 + np.abs(X[:, 0]))  # heteroskedastic
    return rng, X, X @ rng.normal(size=d) + 2.0 + noise


@pytest.mark.parametrize("cov_type", COV_TYPES)
@pytest.mark.parametrize("weighted", [False, True])
def test_every_heteroskedasticity_type_agrees_with_statsmodels(cov_type, weighted):
    rng, X, y = random_problem(1 + weighted)
    w = rng.uniform(0.2, 4.0, y.size) if weighted else None
    ours = stablefit.fit(X, y, weights=w, cov_type=cov_type)
    model = sm.WLS(y, sm.add_constant(X), weights=w) if weighted else sm.OLS(y, sm.add_constant(X))
    theirs = model.fit(cov_type=cov_type, use_t=True)
    assert_table_agrees(ours, theirs)
    assert ours.cov_type == cov_type


@pytest.mark.parametrize("cov_type", ["HC1", "HC3"])
def test_without_intercept_and_with_the_normal_distribution(cov_type):
    _, X, y = random_problem(3)
    ours = stablefit.fit(X, y, intercept=False, cov_type=cov_type, use_t=False)
    theirs = sm.OLS(y, X).fit(cov_type=cov_type)  # statsmodels' default: normal
    assert not theirs.use_t and not ours.use_t
    np.testing.assert_allclose(ours.bse, theirs.bse, rtol=RTOL)
    np.testing.assert_allclose(ours.pvalues, theirs.pvalues, rtol=1e-8, atol=1e-300)
    np.testing.assert_allclose(ours.conf_int(), theirs.conf_int(), rtol=RTOL)
    # statsmodels' robust F: a Wald test of every coefficient, here with no constant
    assert ours.fvalue == pytest.approx(theirs.fvalue, rel=RTOL)
    assert "normal distribution" in ours.notes[-1]


@pytest.mark.parametrize("ways", [1, 2])
@pytest.mark.parametrize("weighted", [False, True])
def test_clustered_one_and_two_ways_agree_with_statsmodels(ways, weighted):
    rng, X, y = random_problem(4, n=150)
    keys = np.column_stack([rng.integers(0, 17, y.size), rng.integers(0, 9, y.size)])[:, :ways]
    w = rng.uniform(0.5, 2.0, y.size) if weighted else None
    model = sm.WLS(y, sm.add_constant(X), weights=w) if weighted else sm.OLS(y, sm.add_constant(X))
    theirs = model.fit(cov_type="cluster", cov_kwds={"groups": keys.squeeze()}, use_t=True)
    ours = stablefit.fit(X, y, weights=w, groups=keys.squeeze())
    assert ours.cov_type == "cluster"
    assert ours.n_groups == (17, 9)[:ways]
    assert_table_agrees(ours, theirs)


@pytest.fixture(scope="module")
def grunfeld() -> pd.DataFrame:
    return sm.datasets.grunfeld.load_pandas().data


@pytest.mark.parametrize("by", [["firm"], ["year"], ["firm", "year"]])
def test_grunfeld_clustered_by_firm_by_year_and_both(grunfeld, by):
    """Grunfeld's investment panel (11 firms, 20 years), columns named in the frame: the
    firm is text, the year a number; neither becomes a feature."""
    frame = grunfeld[["invest", "value", "capital", *by]]
    ours = stablefit.fit(frame, target="invest", groups=by if len(by) == 2 else by[0])
    assert ours.feature_names == ("value", "capital")
    exog = sm.add_constant(grunfeld[["value", "capital"]])
    codes = np.column_stack([pd.factorize(grunfeld[name])[0] for name in by]).squeeze()
    theirs = sm.OLS(grunfeld["invest"], exog).fit(
        cov_type="cluster", cov_kwds={"groups": codes}, use_t=True
    )
    assert_table_agrees(ours, theirs)
    assert ours.n_groups == tuple({"firm": 11, "year": 20}[name] for name in by)


def test_grunfeld_weighted_by_a_column_with_hc3(grunfeld):
    frame = grunfeld.assign(w=1.0 / grunfeld["capital"].clip(lower=1.0))
    ours = stablefit.fit(
        frame, target="invest", weights="w", groups=None, cov_type="HC3", drop_non_numeric=True
    )
    assert ours.feature_names == ("value", "capital", "year")
    exog = sm.add_constant(frame[["value", "capital", "year"]])
    theirs = sm.WLS(frame["invest"], exog, weights=frame["w"]).fit(cov_type="HC3", use_t=True)
    assert_table_agrees(ours, theirs)


def test_tests_from_strings_agree_with_statsmodels():
    rng, X, y = random_problem(5)
    keys = rng.integers(0, 20, y.size)
    ours = stablefit.fit(X, y, groups=keys)
    theirs = sm.OLS(y, sm.add_constant(X)).fit(
        cov_type="cluster", cov_kwds={"groups": keys}, use_t=True
    )
    for restriction, statsmodels_form in [
        ("x0 = x1", "x1 = x2"),
        ("x0 = x1, x2 = 0", "x1 = x2, x3 = 0"),
        ("2*x0 - x2 = 1, intercept = 2", "2*x1 - x3 = 1, const = 2"),
    ]:
        f, their_f = ours.f_test(restriction), theirs.f_test(statsmodels_form)
        assert f.statistic == pytest.approx(float(their_f.fvalue), rel=RTOL)
        assert f.pvalue == pytest.approx(float(their_f.pvalue), rel=1e-8)
        assert (f.df_num, f.df_denom) == (their_f.df_num, their_f.df_denom)
        chi2 = ours.wald_test(restriction, use_f=False)
        their_chi2 = theirs.wald_test(statsmodels_form, use_f=False, scalar=True)
        assert chi2.statistic == pytest.approx(float(their_chi2.statistic), rel=RTOL)
        assert chi2.pvalue == pytest.approx(float(their_chi2.pvalue), rel=1e-8)


@pytest.mark.parametrize("cov_type", ["nonrobust", "HC1"])
@pytest.mark.parametrize("weighted", [False, True])
def test_prediction_intervals_agree_with_statsmodels(cov_type, weighted):
    """Features near 1e6: stablefit forms the variance x'Vx centered. statsmodels forms it
    as given and loses about 4 digits there, so it gets the same model with the features
    centered (the same fit: only the intercept's meaning moves)."""
    rng, X, y = random_problem(6)
    offset = 1e6
    w = rng.uniform(0.5, 2.0, y.size) if weighted else None
    ours = stablefit.fit(X + offset, y, weights=w, cov_type=cov_type)
    exog = sm.add_constant(X)
    model = sm.WLS(y, exog, weights=w) if weighted else sm.OLS(y, exog)
    theirs = model.fit(cov_type=cov_type, use_t=True)
    new = X[:5] + rng.normal(size=(5, X.shape[1]))
    w_new = rng.uniform(0.5, 2.0, 5) if weighted else None
    frame = ours.get_prediction(new + offset, weights=w_new).summary_frame(alpha=0.1)
    reference = theirs.get_prediction(
        sm.add_constant(new, has_constant="add"), weights=w_new
    ).summary_frame(alpha=0.1)
    assert list(frame.columns) == list(reference.columns)
    # A bound near 0 is a difference of mean and half-width: relative to their size
    size = np.abs(frame.to_numpy()).max(axis=1, keepdims=True)
    assert np.all(np.abs(frame.to_numpy() - reference.to_numpy()) <= RTOL * size)
    np.testing.assert_array_equal(frame["mean"], ours.predict(new + offset))


def test_summary_json_and_html_show_the_whole_table():
    rng, X, y = random_problem(7)
    keys = rng.integers(0, 12, y.size)
    result = stablefit.fit(X, y, groups=keys, use_t=False)
    text = str(result.summary())
    for fact in (
        "adj. R²",
        "Wald F",
        "log-likelihood",
        "AIC",
        "BIC",
        "covariance: cluster (12 clusters)",
        "z (normal)",
        "cond. no.",
        "P>|z|",
        "12 clusters of 'groups'",
    ):
        assert fact in text, fact
    html = result.summary().as_html()
    assert "Wald F" in html and "P&gt;|z|" in html
    report = result.to_dict()
    assert report["covariance"]["type"] == "cluster"
    assert report["covariance"]["n_groups"] == [12] and report["covariance"]["df"] == 11
    np.testing.assert_array_equal(report["covariance"]["matrix"], result.covariance)
    for key in ("rsquared_adj", "fvalue", "f_pvalue", "llf", "aic", "bic", "condition_number"):
        assert report[key] == getattr(result, key)


def test_the_estimator_takes_sample_weights_and_a_covariance_type():
    from stablefit import StableLinearRegression

    rng, X, y = random_problem(8)
    w = rng.uniform(0.5, 2.0, y.size)
    w[:3] = 0.0  # scikit-learn's convention: rows left out
    model = StableLinearRegression(cov_type="HC3").fit(X, y, sample_weight=w)
    direct = stablefit.fit(X[3:], y[3:], weights=w[3:], cov_type="HC3")
    np.testing.assert_array_equal(model.coef_, direct.coef)
    np.testing.assert_array_equal(model.result_.bse, direct.bse)
    with pytest.raises(stablefit.errors.StablefitInputError, match="must be positive"):
        StableLinearRegression().fit(X, y, sample_weight=-w)


def test_fewer_clusters_than_coefficients_test_what_the_covariance_determines():
    """Three clusters for five coefficients: the cluster-robust covariance has rank 2, and
    the whole fit ended in 'the restrictions  are not independent'. As statsmodels, the
    overall Wald F tests the combinations the covariance determines."""
    _, X, y = random_problem(11, n=60, d=4)
    keys = np.repeat([0, 1, 2], 20)
    ours = stablefit.fit(X, y, groups=keys)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels: "covariance ... does not have full rank"
        theirs = sm.OLS(y, sm.add_constant(X)).fit(cov_type="cluster", cov_kwds={"groups": keys})
        df_num = theirs.wald_test(np.eye(5)[1:], use_f=True, scalar=True).df_num
        expected = [theirs.fvalue, theirs.f_pvalue]
    assert ours.f_df_num == df_num == 2
    np.testing.assert_allclose([ours.fvalue, ours.f_pvalue], expected, rtol=1e-9)
    assert "2 of 4 restrictions: the covariance has rank 2" in str(ours.summary())
    assert ours.to_dict()["f_df_num"] == 2
    with pytest.raises(stablefit.errors.StablefitInputError, match="not independent"):
        ours.f_test("x0 = 0, x1 = 0, x2 = 0, x3 = 0")  # a test the user writes: all or none


@pytest.mark.parametrize("cov_type", ["hc0", "hc2", "hc3"])
def test_a_robust_fit_without_residuals_or_of_leverage_one_ends_with_a_result(cov_type):
    """A constant target with a robust covariance (all zero) ended in 'the restrictions
    are not independent'; a row of leverage 1 under HC2 let NumPy's 'invalid value
    encountered in sqrt' through to the user."""
    X = np.column_stack([np.arange(20.0), np.r_[1.0, np.zeros(19)]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        constant = stablefit.fit(X, np.full(20, 5.0), cov_type=cov_type)
        leverage_one = stablefit.fit(X, np.sin(np.arange(20.0)), cov_type=cov_type)
    assert np.isnan(constant.fvalue) and "F undefined (the target is constant)" in str(
        constant.summary()
    )
    assert np.isfinite(leverage_one.params).all()
    if cov_type != "hc0":
        assert any("leverage 1" in note for note in leverage_one.notes)
