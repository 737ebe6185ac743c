"""The detailed Summary: extremes, integrality and quantile sketches, compiled and not."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stablefit.io import ArraySource, Schema
from stablefit.summary import QuantileSketch, Summary, extremes, summarize
from stablefit.summary.columns import ROWS_KEPT, ColumnStats
from stablefit.summary.comoments import CoMoments
from stablefit.summary.core import sketch_capacity


def reference_extremes(values, rows, k):
    """The rule of stablefit.summary.extremes, by sorting everything."""
    order = np.lexsort((rows, values))
    if values.size > 2 * k:
        rest = order[k:]
        high = rest[np.lexsort((rows[rest], -values[rest]))[:k]]
        keep = np.concatenate([order[:k], high])
        order = keep[np.lexsort((rows[keep], values[keep]))]
    return values[order], rows[order]


def tied_values(rng, n):
    """Values with many ties, integers and a few wide ones."""
    values = rng.integers(-4, 5, size=n).astype(float)
    wide = rng.random(n) < 0.2
    values[wide] = rng.normal(size=wide.sum()) * 10.0 ** rng.integers(-3, 4, size=wide.sum())
    return values


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 200), k=st.integers(1, 12))
def test_extremes_follow_the_rule_for_values_in_any_order(seed, n, k):
    rng = np.random.default_rng(seed)
    values = tied_values(rng, n)
    rows = rng.permutation(n) + 1000
    kept_values, kept_rows = extremes.select(values, rows, k)
    expected_values, expected_rows = reference_extremes(values, rows, k)
    np.testing.assert_array_equal(kept_values, expected_values)
    np.testing.assert_array_equal(kept_rows, expected_rows)


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 300), cuts=st.lists(st.floats(0, 1)))
def test_extremes_merge_in_any_grouping(seed, n, cuts):
    rng = np.random.default_rng(seed)
    values, rows = tied_values(rng, n), np.arange(n)
    bounds = sorted({0, n, *(int(c * n) for c in cuts)})
    parts = [
        extremes.select(values[a:b], rows[a:b], ROWS_KEPT) for a, b in itertools.pairwise(bounds)
    ]
    # Right to left: later rows are offered first.
    merged = parts[-1]
    for part_values, part_rows in reversed(parts[:-1]):
        merged = extremes.select(
            np.concatenate([merged[0], part_values]),
            np.concatenate([merged[1], part_rows]),
            ROWS_KEPT,
        )
    expected = reference_extremes(values, rows, ROWS_KEPT)
    np.testing.assert_array_equal(merged[0], expected[0])
    np.testing.assert_array_equal(merged[1], expected[1])


def mixed_data(seed: int, n: int, nonfinite: bool) -> tuple[np.ndarray, np.ndarray]:
    """Columns of ties, integers, wide values and (optionally) NaN and inf in places."""
    rng = np.random.default_rng(seed)
    X = np.column_stack(
        [
            tied_values(rng, n),
            rng.integers(0, 3, size=n).astype(float),
            rng.normal(size=n) * 1e3 + 1.7e6,
            np.round(rng.standard_t(2, size=n), 2),
        ]
    )
    y = X[:, 0] - 2.0 * X[:, 3] + rng.normal(size=n)
    if nonfinite:
        X[rng.integers(0, n, size=5), rng.integers(0, 4, size=5)] = np.nan
        X[rng.integers(0, n, size=3), 1] = np.inf
        X[rng.integers(0, n), 3] = -np.inf
    return X, y


def reference_summary(X: np.ndarray, y: np.ndarray) -> dict:
    """Per-column statistics of the finite values and co-moments of the complete rows."""
    Z = np.column_stack([X, y])
    finite = np.isfinite(Z)
    complete = Z[finite.all(axis=1)]
    columns = [Z[finite[:, j], j] for j in range(Z.shape[1])]
    return {
        "count": finite.sum(axis=0),
        "min": np.array([c.min() for c in columns]),
        "max": np.array([c.max() for c in columns]),
        "mean": np.array([c.mean() for c in columns]),
        "m2": np.array([((c - c.mean()) ** 2).sum() for c in columns]),
        "is_integer": np.array([np.all(np.floor(c) == c) for c in columns]),
        "nan_rows": [np.flatnonzero(np.isnan(Z[:, j]))[:ROWS_KEPT] for j in range(Z.shape[1])],
        "inf_rows": [np.flatnonzero(np.isinf(Z[:, j]))[:ROWS_KEPT] for j in range(Z.shape[1])],
        "extremes": [
            reference_extremes(c, np.flatnonzero(finite[:, j]), ROWS_KEPT)
            for j, c in enumerate(columns)
        ],
        "median": np.array([np.quantile(c, 0.5) for c in columns]),
        "complete_mean": complete.mean(axis=0),
        "comoment": (complete - complete.mean(0)).T @ (complete - complete.mean(0)),
    }


def assert_matches_reference(summary: Summary, expected: dict) -> None:
    columns = summary.columns
    np.testing.assert_array_equal(columns.count, expected["count"])
    np.testing.assert_array_equal(columns.min, expected["min"])
    np.testing.assert_array_equal(columns.max, expected["max"])
    np.testing.assert_array_equal(columns.is_integer, expected["is_integer"])
    np.testing.assert_allclose(columns.mean, expected["mean"], rtol=1e-13, atol=1e-12)
    np.testing.assert_allclose(columns.m2, expected["m2"], rtol=1e-10)
    for j in range(summary.p):
        np.testing.assert_array_equal(columns.nan_rows[j], expected["nan_rows"][j])
        np.testing.assert_array_equal(columns.inf_rows[j], expected["inf_rows"][j])
        np.testing.assert_array_equal(columns.extremes[j][0], expected["extremes"][j][0])
        np.testing.assert_array_equal(columns.extremes[j][1], expected["extremes"][j][1])
    assert summary.robust_exact
    np.testing.assert_array_equal(summary.median(), expected["median"])
    np.testing.assert_allclose(
        summary.complete_mean, expected["complete_mean"], rtol=1e-13, atol=1e-12
    )
    np.testing.assert_allclose(summary.comoment, expected["comoment"], rtol=1e-9, atol=1e-6)


@pytest.mark.parametrize("nonfinite", [False, True])
@pytest.mark.parametrize("batch_rows", [1, 7, 1000, 20_000])
def test_detailed_summary_matches_numpy(nonfinite, batch_rows):
    """Pieces with and without NaN or inf, compiled, in batches of any size."""
    X, y = mixed_data(3, 12_345 if batch_rows > 1 else 300, nonfinite)
    schema = Schema(feature_names=("a", "b", "c", "d"), target_name="y")
    summary = summarize(ArraySource(X, y, schema, batch_rows=batch_rows))
    assert_matches_reference(summary, reference_summary(X, y))


@pytest.mark.parametrize("nonfinite", [False, True])
def test_compiled_batch_matches_the_numpy_block_path(nonfinite):
    X, y = mixed_data(5, 9_000, nonfinite)
    Z = np.column_stack([X, y])
    compiled = Summary.from_arrays(X, y)
    finite = np.isfinite(Z)
    numpy_columns = ColumnStats.of_block(Z, 0, finite=finite)
    numpy_complete = CoMoments.of_block(Z[finite.all(axis=1)])
    for name in ("count", "n_nan", "n_inf", "is_integer", "min", "max", "max_abs"):
        np.testing.assert_array_equal(getattr(compiled.columns, name), getattr(numpy_columns, name))
    # Means near 0 of values near 1e3: rounding is relative to the values, not the mean.
    np.testing.assert_allclose(compiled.columns.mean, numpy_columns.mean, rtol=1e-14, atol=1e-12)
    np.testing.assert_allclose(compiled.columns.m2, numpy_columns.m2, rtol=1e-11)
    assert compiled.n_complete == numpy_complete.n
    np.testing.assert_allclose(compiled.complete_mean, numpy_complete.mean, rtol=1e-14, atol=1e-12)
    np.testing.assert_allclose(compiled.comoment, numpy_complete.comoment, rtol=1e-11, atol=1e-6)
    for j in range(Z.shape[1]):
        for mine, theirs in [
            (compiled.columns.extremes[j], numpy_columns.extremes[j]),
            (compiled.columns.nan_rows[j], numpy_columns.nan_rows[j]),
            (compiled.columns.inf_rows[j], numpy_columns.inf_rows[j]),
        ]:
            np.testing.assert_array_equal(mine, theirs)


def test_overflowing_sums_take_the_numpy_path():
    """Two values of 1e308 overflow a column's sum: the NumPy path, which allows for it."""
    X = np.array([[1e308], [1e308], [-3.0], [np.nan], [2.0]])
    summary = Summary.from_arrays(X, np.arange(5.0))
    np.testing.assert_array_equal(summary.columns.count, [4, 5])
    np.testing.assert_array_equal(summary.columns.max_abs, [1e308, 4.0])
    np.testing.assert_array_equal(summary.columns.nan_rows[0], [3])
    np.testing.assert_array_equal(summary.columns.extremes[0][0], [-3.0, 2.0, 1e308, 1e308])
    np.testing.assert_array_equal(summary.columns.extremes[0][1], [2, 4, 0, 1])
    assert summary.robust_exact
    assert summary.median()[0] == np.quantile([1e308, 1e308, -3.0, 2.0], 0.5)


def test_summaries_of_many_groups_keep_every_exact_guarantee():
    """More rows than a sketch keeps: workers compact their groups' sketches themselves."""
    rng = np.random.default_rng(11)
    n = 3 * 2 * sketch_capacity(3) + 12_345
    X = np.column_stack([rng.integers(0, 50, size=n), rng.standard_t(3, size=n)]).astype(float)
    y = rng.normal(size=n)
    schema = Schema(feature_names=("a", "b"), target_name="y")
    summary = summarize(ArraySource(X, y, schema, batch_rows=9_999))
    assert not summary.robust_exact
    Z = np.column_stack([X, y])
    np.testing.assert_array_equal(summary.columns.is_integer, [True, False, False])
    for j in range(3):
        expected = reference_extremes(Z[:, j], np.arange(n), ROWS_KEPT)
        np.testing.assert_array_equal(summary.columns.extremes[j][0], expected[0])
        np.testing.assert_array_equal(summary.columns.extremes[j][1], expected[1])
        sketch = summary.sketches[j]
        assert sketch.count == n and sketch.rank_error_bound > 0
        ordered = np.sort(Z[:, j])
        top_weight = 2.0 ** (len(sketch.levels) - 1)
        for q in (0.01, 0.25, 0.5, 0.75, 0.99):
            value = sketch.quantile(q)
            below, upto = (
                np.searchsorted(ordered, value, "left"),
                np.searchsorted(ordered, value, "right"),
            )
            # Some rank of the value returned lies within the bound of q * n.
            assert below - sketch.rank_error_bound - top_weight <= q * n
            assert q * n <= upto + sketch.rank_error_bound + top_weight


def test_a_sketch_stays_exact_up_to_its_capacity_across_batches():
    capacity = sketch_capacity(2)
    rng = np.random.default_rng(2)
    X = rng.normal(size=(capacity, 1))
    y = rng.normal(size=capacity)
    schema = Schema(feature_names=("a",), target_name="y")
    exact = summarize(ArraySource(X, y, schema, batch_rows=4_000))
    assert exact.robust_exact
    np.testing.assert_array_equal(exact.median(), np.quantile(np.column_stack([X, y]), 0.5, axis=0))
    more = summarize(
        ArraySource(np.vstack([X, X[:1]]), np.append(y, y[0]), schema, batch_rows=4_000)
    )
    assert not more.robust_exact


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    capacity=st.sampled_from([64, 100, 257]),
    sizes=st.lists(st.integers(1, 700), min_size=1, max_size=30),
    sorted_runs=st.booleans(),
)
def test_the_rank_error_stays_within_the_sketch_bound(seed, capacity, sizes, sorted_runs):
    rng = np.random.default_rng(seed)
    chunks = [np.round(rng.standard_t(2, size=size), 1) for size in sizes]
    sketches = []
    for chunk in chunks:
        sketch = QuantileSketch(capacity=capacity)
        sketch.update(np.sort(chunk) if sorted_runs else chunk, is_sorted=sorted_runs)
        sketches.append(sketch)
    # A tree of merges, as well as a stream.
    while len(sketches) > 1:
        sketches = [a.merge(b) for a, b in zip(sketches[::2], sketches[1::2], strict=False)] + (
            sketches[-1:] if len(sketches) % 2 else []
        )
    sketch = sketches[0]
    values = np.sort(np.concatenate(chunks))
    assert sketch.count == values.size
    assert sketch.exact == (values.size <= capacity) == (sketch.rank_error_bound == 0)
    levels = sketch.levels
    assert sum(level.size * 2**h for h, level in enumerate(levels)) == values.size
    for level in levels:
        assert np.isin(level, values).all()
    # Rank of every kept value, estimated from the levels, against its true ranks.
    kept = np.concatenate(levels)
    weights = np.concatenate([np.full(level.size, 2**h) for h, level in enumerate(levels)])
    for value in np.unique(kept):
        estimate = weights[kept <= value].sum()
        true = np.searchsorted(values, value, "right")
        assert abs(estimate - true) <= sketch.rank_error_bound
