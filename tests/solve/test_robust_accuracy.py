"""Robust covariances: passes over the data, bad weights and keys, and accuracy against
a 50-digit reference where statsmodels loses digits."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from dataclasses import dataclass

import mpmath
import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

import stablefit
from stablefit.cli.main import main
from stablefit.errors import StablefitInputError
from stablefit.io import ArraySource, Batch, Schema
from stablefit.pipeline import fit_source
from stablefit.rowdata import row_data


@dataclass
class CountingSource(ArraySource):
    """An in-memory source that counts the passes made over it."""

    passes: int = 0

    def batches(self) -> Iterator[Batch]:
        self.passes += 1
        yield from super().batches()


def counting(X: np.ndarray, y: np.ndarray) -> CountingSource:
    names = tuple(f"x{j}" for j in range(X.shape[1]))
    return CountingSource(X, y, Schema(names, "y"), batch_rows=50)


def test_robust_types_cost_no_pass_of_their_own_and_switching_costs_one_at_most():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 3))
    y = X @ [1.0, 2.0, 3.0] + rng.normal(size=400) * (1 + X[:, 0] ** 2)
    plain = counting(X, y)
    fit_source(plain, cov_type="nonrobust")
    robust = counting(X, y)
    hc1 = fit_source(robust, cov_type="HC1")
    assert robust.passes == plain.passes  # the meat came with the refinement pass
    assert hc1.get_robustcov("HC0").cov_type == "HC0"
    assert robust.passes == plain.passes  # HC0 from HC1's meat
    before = robust.passes
    hc3 = hc1.get_robustcov("HC3")
    assert robust.passes == before + 1  # leverages: one more pass
    keys = rng.integers(0, 30, 400)
    clustered = hc1.get_robustcov("cluster", groups=keys)
    assert robust.passes == before + 2
    direct = stablefit.fit(X, y, cov_type="HC3")
    np.testing.assert_allclose(hc3.covariance, direct.covariance, rtol=1e-12)
    np.testing.assert_allclose(
        clustered.covariance, stablefit.fit(X, y, groups=keys).covariance, rtol=1e-12
    )
    np.testing.assert_array_equal(hc3.params, hc1.params)
    assert clustered.df_inference == 29 and "30 clusters" in clustered.notes[-1]
    assert hc1.get_robustcov("nonrobust").notes == []


def test_clusters_cost_no_extra_pass_and_memory_follows_the_clusters():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(600, 2))
    y = X.sum(axis=1) + rng.normal(size=600)
    keys = rng.integers(0, 7, 600)
    plain, clustered = counting(X, y), counting(X, y)
    fit_source(plain)
    result = fit_source(clustered, rows=row_data(X, None, keys, 600), cov_type="cluster")
    assert clustered.passes == plain.passes
    scores = result._covariances.statistics.groups[0].compacted()
    assert scores.keys.size == 7 and scores.hi.shape == (7, 3)


def test_a_pickled_result_keeps_its_numbers_but_not_the_data():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(50, 2))
    result = stablefit.fit(X, X.sum(axis=1) + rng.normal(size=50), cov_type="HC1")
    copy = pickle.loads(pickle.dumps(result))
    np.testing.assert_array_equal(copy.bse, result.bse)
    assert copy.get_prediction(X[:2]).se_mean.shape == (2,)
    with pytest.raises(StablefitInputError, match="fit again with cov_type"):
        copy.get_robustcov("HC3")


@pytest.mark.parametrize(
    ("weights", "match"),
    [
        (np.r_[1.0, 0.0, 1.0, -2.0, np.ones(6)], r"2 are not \(rows 1, 3\)"),
        (np.r_[np.inf, np.ones(9)], r"1 are not \(row 0\)"),
        (np.ones(9), "weights has 9 values but the data has 10 rows"),
    ],
)
def test_bad_weights_are_errors_naming_rows(weights, match):
    X = np.arange(20.0).reshape(10, 2) ** 1.5
    with pytest.raises(StablefitInputError, match=match):
        stablefit.fit(X, np.arange(10.0), weights=weights)


def test_weights_whose_products_with_the_data_overflow_are_refused(tmp_path, capsys):
    """Weights up to 1e195 on data near 10 (their squares overflow): an OverflowError from
    the total sum of squares with an intercept, and without one a fit that called a column
    collinear and claimed 15 digits of coefficients with none right."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 3))
    y = X @ [1.0, 2.0, 3.0] + rng.normal(size=30)
    w = np.exp(rng.uniform(0, np.log(1e200), 30))
    heaviest = int(np.argmax(w))
    for intercept in (True, False):
        with pytest.raises(StablefitInputError, match=rf"reach .*\(row {heaviest}\).*power of ten"):
            stablefit.fit(X, y, weights=w, intercept=intercept)
    path = tmp_path / "heavy.csv"
    columns = {"a": X[:, 0], "b": X[:, 1], "c": X[:, 2], "w": w, "y": y}
    pd.DataFrame(columns).to_csv(path, index=False)
    assert main(["fit", str(path), "--target", "y", "--weights", "w"]) == 2
    err = capsys.readouterr().err
    assert f"(line {heaviest + 2})" in err and len(err.splitlines()) == 1


def test_missing_weights_and_keys_are_errors_or_dropped_rows():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, 2))
    y = X.sum(axis=1) + rng.normal(size=40)
    w = rng.uniform(1, 2, 40)
    w[[5, 9]] = np.nan
    keys = rng.integers(0, 5, 40).astype(object)
    keys[12] = None
    with pytest.raises(StablefitInputError, match=r"3 rows have no value .*rows 5, 9, 12"):
        stablefit.fit(X, y, weights=w, groups=keys)
    dropped = stablefit.fit(X, y, weights=w, groups=keys, missing="drop")
    keep = np.ones(40, dtype=bool)
    keep[[5, 9, 12]] = False
    clean = stablefit.fit(X[keep], y[keep], weights=w[keep], groups=keys[keep].astype(int))
    assert dropped.n_dropped_rows == 3 and dropped.n_obs == 37
    assert "missing weight or cluster key" in dropped.notes[0]
    np.testing.assert_allclose(dropped.covariance, clean.covariance, rtol=1e-13)


def test_cluster_needs_keys_and_two_clusters():
    X = np.arange(12.0).reshape(6, 2) ** 1.3
    y = np.arange(6.0) ** 1.1
    with pytest.raises(StablefitInputError, match="needs cluster keys"):
        stablefit.fit(X, y, cov_type="cluster")
    with pytest.raises(StablefitInputError, match="at least 2 clusters"):
        stablefit.fit(X, y, groups=np.zeros(6))
    # The column and the fix are named (the message gave neither).
    one_firm = pd.DataFrame({"a": X[:, 0], "b": X[:, 1], "firm": "GM", "y": y})
    with pytest.raises(StablefitInputError, match=r"hold 1 of 'firm' .*--cov-type hc1"):
        stablefit.fit(one_firm, target="y", groups="firm")
    with pytest.raises(StablefitInputError, match="not a covariance type"):
        stablefit.fit(X, y, cov_type="HC4")
    with pytest.raises(StablefitInputError, match=r"one or two ways|one or two columns"):
        stablefit.fit(X, y, groups=np.zeros((6, 3)))


# -- accuracy against 50-digit arithmetic ---------------------------------------------------


def reference(A: np.ndarray, y: np.ndarray, kind: str, groups=None, w=None):
    """Coefficients and standard errors of the exact least-squares fit of the float64 data,
    in 50-digit arithmetic, with the covariance ``kind``."""
    mpmath.mp.dps = 50
    n, k = A.shape
    rows = [[mpmath.mpf(float(v)) for v in row] for row in A]
    target = [mpmath.mpf(float(v)) for v in y]
    weight = [
        mpmath.mpf(1) if w is None else mpmath.mpf(float(v)) for v in (w if w is not None else y)
    ]
    gram = mpmath.matrix(k, k)
    rhs = mpmath.matrix(k, 1)
    for i in range(n):
        for a in range(k):
            rhs[a] += weight[i] * rows[i][a] * target[i]
            for c in range(k):
                gram[a, c] += weight[i] * rows[i][a] * rows[i][c]
    bread = mpmath.inverse(gram)
    beta = bread * rhs
    resid = [target[i] - mpmath.fsum(rows[i][a] * beta[a] for a in range(k)) for i in range(n)]
    keys = list(range(n)) if groups is None else list(groups)
    scores: dict = {}
    for i in range(n):
        factor = mpmath.mpf(1)
        if kind in ("HC2", "HC3"):
            u = bread * mpmath.matrix(rows[i])
            leverage = weight[i] * mpmath.fsum(rows[i][a] * u[a] for a in range(k))
            factor = 1 / (1 - leverage) if kind == "HC3" else 1 / mpmath.sqrt(1 - leverage)
        score = scores.setdefault(keys[i], [mpmath.mpf(0)] * k)
        for a in range(k):
            score[a] += weight[i] * resid[i] * rows[i][a] * factor
    meat = mpmath.matrix(k, k)
    for score in scores.values():
        for a in range(k):
            for c in range(k):
                meat[a, c] += score[a] * score[c]
    V = bread * meat * bread
    if kind == "nonrobust":
        V = bread * mpmath.fsum(weight[i] * resid[i] ** 2 for i in range(n)) / (n - k)
    if kind == "HC1":
        V *= mpmath.mpf(n) / (n - k)
    if kind == "cluster":
        G = len(scores)
        V *= mpmath.mpf(G) / (G - 1) * mpmath.mpf(n - 1) / (n - k)
    return [beta[a] for a in range(k)], [mpmath.sqrt(V[a, a]) for a in range(k)]


def digits(estimates, exact) -> float:
    """Fewest correct significant digits among the estimates."""
    worst = 0.0
    for estimate, value in zip(estimates, exact, strict=True):
        worst = max(worst, float(abs(mpmath.mpf(float(estimate)) - value) / abs(value)))
    return 16.0 if worst == 0 else -np.log10(worst)


@pytest.mark.parametrize("kind", ["HC1", "HC3"])
def test_longley_robust_standard_errors_against_50_digits(kind):
    """Longley's macroeconomic data (statsmodels' copy; raw condition number 5e9):
    statsmodels keeps about 11 digits of the coefficients and 8–11 of the robust standard
    errors; stablefit all of the coefficients and what its note says of the errors."""
    data = sm.datasets.longley.load_pandas().data
    X = data.drop(columns="TOTEMP").to_numpy(float)
    y = data["TOTEMP"].to_numpy(float)
    beta, se = reference(sm.add_constant(X), y, kind)
    ours = stablefit.fit(X, y, cov_type=kind)
    theirs = sm.OLS(y, sm.add_constant(X)).fit(cov_type=kind)
    assert digits(ours.params, beta) >= 15
    assert digits(ours.bse, se) >= 12
    assert digits(theirs.params, beta) < 12 and digits(theirs.bse, se) < 11.5


@pytest.mark.parametrize("kind", ["HC0", "HC2", "cluster"])
def test_polynomial_far_from_zero_where_statsmodels_has_no_digit(kind):
    """A quartic in x = 1000…1020 (raw condition number about 1e19): statsmodels' pinv
    declares the design singular and returns another fit; stablefit's coefficients carry
    the certified digits and its robust errors (double-double Gram, the solver's
    condition number 3e8) at least 13."""
    rng = np.random.default_rng(0)
    x = np.linspace(1000.0, 1020.0, 60)
    P = np.column_stack([x**j for j in range(1, 5)])
    y = 1.0 + 0.5 * x - 1e-3 * x**2 + rng.normal(size=60) * (1 + (x - 1010) ** 2 / 50)
    keys = np.repeat(np.arange(12), 5)
    groups = keys if kind == "cluster" else None
    beta, se = reference(sm.add_constant(P), y, kind, groups)
    ours = stablefit.fit(P, y, cov_type=kind, groups=groups)
    assert ours.certificate.condition_number > 1e8
    assert digits(ours.params, beta) >= ours.certificate.digits >= 14
    assert digits(ours.bse, se) >= 13
    with pytest.warns(UserWarning):  # rank-deficient by its own tolerance
        theirs = sm.OLS(y, sm.add_constant(P)).fit(
            cov_type=kind, cov_kwds={"groups": keys} if groups is not None else None
        )
    assert digits(theirs.params, beta) < 1 and digits(theirs.bse, se) < 1


@pytest.mark.parametrize("kind", ["nonrobust", "HC1"])
def test_moderately_conditioned_standard_errors_keep_their_digits(kind):
    """Two nearly equal columns (condition number 7e3 after scaling, as correlated real
    features have): the factor from the co-moments left the standard errors 8 digits (its
    error grows with κ²) where statsmodels keeps 12.6; a QR factor keeps at least as many."""
    rng = np.random.default_rng(1)
    x1 = rng.normal(size=200)
    X = np.column_stack([x1, x1 + 0.0003 * rng.normal(size=200), rng.normal(size=200)])
    y = 1 + 2 * X[:, 0] + 3 * X[:, 1] + rng.normal(size=200)
    beta, se = reference(sm.add_constant(X), y, kind)
    ours = stablefit.fit(X, y, cov_type=kind)
    assert 1e3 < ours.certificate.condition_number < 1e4
    assert digits(ours.params, beta) >= 15
    theirs = sm.OLS(y, sm.add_constant(X)).fit(cov_type=kind)
    assert digits(ours.bse, se) >= max(12.5, digits(theirs.bse, se))


def test_weighted_offset_data_against_50_digits():
    rng = np.random.default_rng(4)
    t = 1.7e9 + np.sort(rng.uniform(0, 86400, 80))
    X = np.column_stack([t, rng.normal(size=80)])
    w = rng.uniform(0.1, 10, 80)
    y = 3e-4 * (t - 1.7e9) + X[:, 1] + rng.normal(size=80) / np.sqrt(w)
    beta, se = reference(sm.add_constant(X), y, "HC1", w=w)
    ours = stablefit.fit(X, y, weights=w, cov_type="HC1")
    assert digits(ours.params, beta) >= 14
    assert digits(ours.bse, se) >= 12


@pytest.mark.parametrize("intercept", [True, False])
def test_weights_spanning_many_decades_keep_the_certified_digits(intercept):
    """Weights from 1e-60 to 1e60: the rounding bound multiplied unweighted norms by the
    largest weight, and the certificate claimed no digit (every coefficient 'zero to within'
    its bound) for coefficients correct to 16. Weighted norms bound the same rounding."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 3))
    y = X @ [1.0, 2.0, 3.0] + rng.normal(size=30)
    w = 10.0 ** rng.uniform(-60, 60, 30)
    columns = sm.add_constant(X) if intercept else X
    beta, se = reference(columns, y, "nonrobust", w=w)
    ours = stablefit.fit(X, y, weights=w, intercept=intercept)
    assert ours.certificate.digits >= 14 and ours.certificate.zeros == ()
    assert digits(ours.params, beta) >= ours.certificate.digits
    assert digits(ours.bse, se) >= 13


def test_standard_errors_that_keep_fewer_digits_say_how_many():
    """Columns near 6.2e10 varying by 0.04, without an intercept (condition number 2.6e12):
    coefficients correct to 16 digits, standard errors to 8 (statsmodels': none), and no
    word of it. The note's count must not exceed the digits there."""
    rng = np.random.default_rng(5)
    X = 6.2e10 + 0.043 * rng.normal(size=(300, 3))
    y = X @ rng.normal(size=3) + 0.1 * rng.normal(size=300)
    beta, se = reference(X, y, "nonrobust")
    ours = stablefit.fit(X, y, intercept=False)
    assert digits(ours.params, beta) >= ours.certificate.digits >= 15
    (note,) = [n for n in ours.notes if "Standard errors carry" in n]
    stated = int(note.split("about ")[1].split(" ")[0])
    assert 5 <= stated <= digits(ours.bse, se) < 13


def test_a_result_does_not_keep_the_files_data_alive(tmp_path):
    """get_robustcov reads a file again when it needs a pass; the parsed copy kept for the
    fit's own passes is not held by the result."""
    import gc
    import tracemalloc

    import pandas as pd

    rng = np.random.default_rng(5)
    frame = pd.DataFrame(rng.normal(size=(60_000, 10)), columns=[f"x{j}" for j in range(10)])
    frame["y"] = frame.sum(axis=1) + rng.normal(size=len(frame))
    frame["firm"] = rng.integers(0, 40, len(frame)).astype(str)
    path = tmp_path / "panel.csv"
    frame.to_csv(path, index=False)
    frame.iloc[:2000].to_csv(tmp_path / "small.csv", index=False)
    stablefit.fit(str(tmp_path / "small.csv"), target="y", groups="firm", cov_type="HC1")
    tracemalloc.start()
    result = stablefit.fit(str(path), target="y", groups="firm", cov_type="HC1")
    gc.collect()
    kept, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert kept < 1e6  # the data as float64 and the cluster codes: 5.8 MB
    clustered = result.get_robustcov("cluster")
    hc3 = result.get_robustcov("HC3")  # one more pass over the file
    direct = stablefit.fit(frame.drop(columns="firm"), target="y", cov_type="HC3")
    np.testing.assert_allclose(hc3.bse, direct.bse, rtol=1e-12)
    assert clustered.n_groups == (40,)
