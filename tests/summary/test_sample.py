"""The Summary's row sample: bounded, evenly spread, and the same however the rows come."""

from __future__ import annotations

from itertools import pairwise

import numpy as np

from stablefit.io.schema import Batch, Schema
from stablefit.summary import Summary
from stablefit.summary.sample import RowSample


def test_the_sample_is_bounded_and_evenly_spread():
    X = np.arange(100_000, dtype=float).reshape(-1, 1)
    summary = Summary.from_arrays(X, X[:, 0] * 2)
    sample = summary.sample
    assert 1000 < sample.rows.size <= sample.capacity == 2000
    step = np.diff(sample.rows)
    assert np.all(step == step[0]) and sample.rows[0] == 0
    np.testing.assert_array_equal(sample.X[:, 0], sample.rows)
    np.testing.assert_array_equal(sample.y, 2 * sample.rows)


def test_the_sample_does_not_depend_on_how_the_rows_are_split():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(30_001, 3)), rng.normal(size=30_001)
    whole = RowSample.of_block(X, y, 0, 500)
    cuts = [0, 7, 4096, 10_000, 10_001, 29_000, 30_001]
    parts = [RowSample.of_block(X[a:b], y[a:b], a, 500) for a, b in pairwise(cuts)]
    merged = parts[0]
    for part in parts[1:]:
        merged = merged.merge(part)
    backwards = parts[-1]
    for part in reversed(parts[:-1]):
        backwards = part.merge(backwards)
    for other in (merged, backwards):
        np.testing.assert_array_equal(other.rows, whole.rows)
        np.testing.assert_array_equal(other.X, whole.X)
        np.testing.assert_array_equal(other.y, whole.y)


def test_a_summary_of_batches_keeps_the_same_sample_as_one_of_the_whole():
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(20_000, 2)), rng.normal(size=20_000)
    schema = Schema(feature_names=("a", "b"), target_name="y")
    batches = [Batch(X[s : s + 3000], y[s : s + 3000], s) for s in range(0, 20_000, 3000)]
    parts = [Summary.of_batches([b], schema) for b in batches]
    merged = parts[0]
    for part in parts[1:]:
        merged = merged.merge(part)
    whole = Summary.from_arrays(X, y)
    np.testing.assert_array_equal(merged.sample.rows, whole.sample.rows)
    np.testing.assert_array_equal(merged.sample.X, whole.sample.X)
