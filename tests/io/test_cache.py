"""CachingSource: the first pass serves later ones within the budget, never beyond it."""

from __future__ import annotations

import numpy as np
import pandas as pd

from stablefit.io import CachingSource, open_source


class CountingSource:
    """A real CSV source that counts how often it is read."""

    def __init__(self, path):
        self.inner = open_source(path, target="y", batch_rows=100)
        self.schema = self.inner.schema
        self.passes = 0

    def batches(self):
        self.passes += 1
        yield from self.inner.batches()


def _csv(tmp_path, rows=1000):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(rows, 3)), columns=["a", "b", "y"])
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False)
    return path


def _passes(source):
    return [(b.first_row, b.X.copy(), b.y.copy()) for b in source.batches()]


def test_within_budget_the_file_is_read_once(tmp_path):
    counting = CountingSource(_csv(tmp_path))
    cached = CachingSource(counting)
    first, second, third = _passes(cached), _passes(cached), _passes(cached)
    assert counting.passes == 1 and cached.cached
    for a, b in zip(first, second + third, strict=False):
        assert a[0] == b[0]
        np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_array_equal(a[2], b[2])


def test_beyond_budget_every_pass_reads_the_file(tmp_path):
    counting = CountingSource(_csv(tmp_path))
    cached = CachingSource(counting, budget_bytes=10_000)  # the data take 32 kB
    first, second = _passes(cached), _passes(cached)
    assert counting.passes == 2 and not cached.cached
    assert len(first) == len(second) == 10
