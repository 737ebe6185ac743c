"""The Summary: one pass, mergeable, exact where it claims to be."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stablefit.io import ArraySource, Schema
from stablefit.summary import QuantileSketch, Summary, summarize


def _data(seed: int, n: int, d: int, with_nan: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * 10.0 ** rng.integers(-3, 4, size=d) + rng.normal(size=d) * 1e3
    y = X @ rng.normal(size=d) + rng.normal(size=n)
    if with_nan and n > 2:
        X[rng.integers(0, n, size=2), rng.integers(0, d, size=2)] = np.nan
        X[rng.integers(0, n), 0] = np.inf
    return X, y


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(2, 300),
    d=st.integers(1, 5),
    cuts=st.lists(st.floats(0, 1), max_size=4),
    with_nan=st.booleans(),
)
def test_merge_of_parts_equals_summary_of_the_whole(seed, n, d, cuts, with_nan):
    X, y = _data(seed, n, d, with_nan)
    whole = Summary.from_arrays(X, y)
    bounds = sorted({0, n, *(int(c * n) for c in cuts)})
    parts = [Summary.from_arrays(X[a:b], y[a:b]) for a, b in itertools.pairwise(bounds)]
    merged = parts[0]
    for part in parts[1:]:
        merged = merged.merge(part)
    # Row indices restart in each part; counts, moments and co-moments must agree.
    assert merged.n_rows == whole.n_rows
    assert merged.n_complete == whole.n_complete
    np.testing.assert_array_equal(merged.columns.count, whole.columns.count)
    np.testing.assert_array_equal(merged.columns.n_nan, whole.columns.n_nan)
    np.testing.assert_array_equal(merged.columns.n_inf, whole.columns.n_inf)
    np.testing.assert_array_equal(merged.columns.min, whole.columns.min)
    np.testing.assert_array_equal(merged.columns.max, whole.columns.max)
    np.testing.assert_allclose(merged.columns.mean, whole.columns.mean, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(merged.columns.m2, whole.columns.m2, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(merged.comoment, whole.comoment, rtol=1e-10, atol=1e-6)
    np.testing.assert_allclose(merged.median(), whole.median(), rtol=0, atol=0)


def test_streamed_batches_equal_one_array():
    X, y = _data(3, 1000, 4, with_nan=True)
    schema = Schema(feature_names=("a", "b", "c", "d"), target_name="y")
    streamed = summarize(ArraySource(X, y, schema, batch_rows=37))
    whole = summarize(ArraySource(X, y, schema, batch_rows=10_000))
    np.testing.assert_allclose(streamed.comoment, whole.comoment, rtol=1e-11)
    for j in range(4):
        np.testing.assert_array_equal(streamed.columns.nan_rows[j], whole.columns.nan_rows[j])
        np.testing.assert_array_equal(streamed.columns.extremes[j][1], whole.columns.extremes[j][1])


def test_without_cross_products_the_diagonal_is_kept_and_the_rest_refused():
    X, y = _data(5, 1000, 4, with_nan=True)
    source = ArraySource(X, y, Schema(feature_names=("a", "b", "c", "d"), target_name="y"), 37)
    full = summarize(source, detail=False)
    diagonal = summarize(source, detail=False, cross_products=False)
    assert diagonal.n_complete == full.n_complete
    np.testing.assert_allclose(diagonal.complete_mean, full.complete_mean, rtol=1e-13)
    np.testing.assert_allclose(diagonal.complete_m2, np.diag(full.comoment), rtol=1e-12)
    with pytest.raises(ValueError, match="without cross-products"):
        diagonal.comoment  # noqa: B018
    with pytest.raises(ValueError, match="always forms"):
        summarize(source, cross_products=False)


@pytest.mark.parametrize("keep", [True, False])
def test_the_first_batch_decides_whether_the_rest_forms_cross_products(keep):
    X, y = _data(6, 500, 3, with_nan=False)
    source = ArraySource(X, y, Schema(feature_names=("a", "b", "c"), target_name="y"), 100)
    asked = []
    summary = summarize(
        source, detail=False, cross_products=lambda first: asked.append(first) or keep
    )
    assert [first.n for first in asked] == [100]
    np.testing.assert_allclose(asked[0].mean, np.column_stack([X, y])[:100].mean(0), rtol=1e-13)
    full = summarize(source, detail=False)
    if keep:
        np.testing.assert_array_equal(summary.comoment, full.comoment)
    else:
        assert not summary.complete.cross_products
        np.testing.assert_allclose(summary.complete_m2, np.diag(full.comoment), rtol=1e-12)


def test_moments_match_numpy_on_complete_rows():
    X, y = _data(7, 500, 3, with_nan=True)
    summary = Summary.from_arrays(X, y)
    Z = np.column_stack([X, y])
    complete = Z[np.isfinite(Z).all(axis=1)]
    assert summary.n_complete == complete.shape[0]
    np.testing.assert_allclose(summary.complete_mean, complete.mean(axis=0), rtol=1e-13)
    expected = (complete - complete.mean(0)).T @ (complete - complete.mean(0))
    np.testing.assert_allclose(summary.comoment, expected, rtol=1e-10, atol=1e-8)
    finite_x0 = Z[np.isfinite(Z[:, 0]), 0]
    assert summary.columns.count[0] == finite_x0.size
    assert summary.columns.mean[0] == pytest.approx(finite_x0.mean(), rel=1e-13)
    assert summary.columns.n_inf[0] == 1


def test_large_offset_keeps_its_spread():
    """A timestamp column near 1.7e9 with unit spread: the variance must survive."""
    rng = np.random.default_rng(0)
    t = 1.7e9 + rng.integers(0, 1000, size=10_000).astype(float)
    summary = Summary.from_arrays(t[:, None], rng.normal(size=t.size))
    exact_var = np.var(t - 1.7e9)
    assert summary.columns.var[0] == pytest.approx(exact_var, rel=1e-12)
    assert summary.comoment[0, 0] / t.size == pytest.approx(exact_var, rel=1e-12)


def test_gram_matches_design_products():
    X, y = _data(11, 200, 3, with_nan=False)
    G, g, yy = Summary.from_arrays(X, y).gram(intercept=True)
    A = np.column_stack([X, np.ones(len(y))])
    np.testing.assert_allclose(G, A.T @ A, rtol=1e-11)
    np.testing.assert_allclose(g, A.T @ y, rtol=1e-11)
    assert yy == pytest.approx(y @ y, rel=1e-12)


def test_nan_rows_are_named():
    X = np.arange(20.0).reshape(10, 2)
    X[[3, 7], 1] = np.nan
    summary = Summary.from_arrays(X, np.ones(10), feature_names=["a", "b"])
    np.testing.assert_array_equal(summary.columns.nan_rows[1], [3, 7])
    assert summary.schema.format_rows(summary.columns.nan_rows[1]) == "rows 3, 7"


def test_quantile_sketch_is_exact_within_capacity_and_close_beyond():
    rng = np.random.default_rng(5)
    values = rng.standard_t(3, size=200_000)
    exact = QuantileSketch(capacity=1 << 18)
    exact.update(values)
    assert exact.exact
    assert exact.quantile(0.5) == np.median(values)
    sketch = QuantileSketch(capacity=4096)
    for chunk in np.array_split(values, 50):
        sketch.update(chunk)
    assert not sketch.exact
    for q in (0.01, 0.25, 0.5, 0.75, 0.99):
        rank = np.mean(values <= sketch.quantile(q))
        assert abs(rank - q) < 0.01, (q, rank)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.lists(st.integers(-5, 5).map(float), max_size=12), min_size=2, max_size=5).filter(
        lambda levels: any(levels)
    ),
    st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.7, 0.99, 1.0]),
)
def test_a_sketched_quantile_is_that_of_the_values_repeated_by_their_weights(levels, q):
    # Values at level h stand for 2**h values each: the quantile is the smallest kept value
    # with at least q of the weight at or below it. Small integers make ties common.
    sketch = QuantileSketch(capacity=1)
    sketch._runs = [[] for _ in levels]
    sketch._others = [[np.array(level)] for level in levels]
    sketch._sizes = [len(level) for level in levels]
    sketch.count = sum(len(level) << h for h, level in enumerate(levels))
    repeated = np.sort(np.concatenate([np.repeat(lv, 1 << h) for h, lv in enumerate(levels)]))
    expected = repeated[max(int(np.ceil(q * repeated.size)) - 1, 0)]
    assert sketch.quantile(q) == expected
    center = 0.5
    deviations = np.sort(np.abs(repeated - center))
    expected = deviations[max(int(np.ceil(q * deviations.size)) - 1, 0)]
    assert sketch.absolute_deviation_quantile(center, q) == expected


def test_co_moments_of_offset_and_trending_columns_are_exact_to_rounding():
    """Runs of rows centered at their own means, their offsets added back: a column near
    1.7e9 that trends, one near 1e12 with unit spread, a step, none loses its digits."""
    from fractions import Fraction

    rng = np.random.default_rng(8)
    n = 3000
    X = np.column_stack(
        [
            1.7e9 + np.arange(n) / 8.0,
            1e12 + rng.integers(-4, 5, size=n),
            np.where(np.arange(n) < 2000, 0.0, 1e6),
        ]
    )
    y = rng.normal(size=n)
    fast = Summary.from_arrays(X, y, detail=False)
    Z = [[Fraction(v) for v in row] for row in np.column_stack([X, y]).tolist()]
    mean = [sum(column) / n for column in zip(*Z, strict=True)]
    for a in range(4):
        for b in range(a + 1):
            exact = sum((row[a] - mean[a]) * (row[b] - mean[b]) for row in Z)
            scale = float(sum(abs(row[a] - mean[a]) * abs(row[b] - mean[b]) for row in Z))
            assert abs(fast.comoment[a, b] - float(exact)) <= 1e-13 * scale, (a, b)
        assert abs(fast.complete_mean[a] - float(mean[a])) <= 1e-15 * abs(float(mean[a])) + 1e-12


@pytest.mark.parametrize("with_nan", [False, True])
def test_the_compiled_path_agrees_with_the_general_one(with_nan):
    """detail=False takes a compiled one-pass path for blocks without NaN or inf."""
    X, y = _data(13, 20_000, 4, with_nan)
    fast, general = Summary.from_arrays(X, y, detail=False), Summary.from_arrays(X, y)
    assert fast.n_complete == general.n_complete
    np.testing.assert_array_equal(fast.columns.count, general.columns.count)
    np.testing.assert_array_equal(fast.columns.min, general.columns.min)
    np.testing.assert_array_equal(fast.columns.max, general.columns.max)
    np.testing.assert_array_equal(fast.columns.max_abs, general.columns.max_abs)
    np.testing.assert_allclose(fast.columns.mean, general.columns.mean, rtol=1e-13)
    np.testing.assert_allclose(fast.columns.m2, general.columns.m2, rtol=1e-12)
    np.testing.assert_allclose(fast.comoment, general.comoment, rtol=1e-12, atol=1e-6)
    np.testing.assert_allclose(fast.complete_mean, general.complete_mean, rtol=1e-13)
