"""A bounded sample of whole rows, evenly spread over the data, kept in one pass.

Row ``i`` (0-based, over the whole source) is kept when ``i`` is a multiple of ``2**level``,
with the smallest level that keeps at most ``capacity`` rows. The choice depends on the row
indices alone, so it merges: the sample of a union is the union of its parts' samples,
thinned to the larger level and then further until it fits. Taking a part's rows costs a
strided slice, not a look at every row, so a pass over a 1 GB file keeps its few thousand
rows for free. Evenly spaced rows follow the file from start to end; data with a period of
a power of two rows would be seen at one phase of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Rows a sample keeps at most, and the values (rows × columns) at most.
SAMPLE_ROWS = 2000
SAMPLE_VALUES = 1 << 21


def sample_capacity(p: int) -> int:
    """Rows kept for p columns: SAMPLE_ROWS, fewer when the rows are wide."""
    return max(64, min(SAMPLE_ROWS, SAMPLE_VALUES // max(p, 1)))


def _multiples(start: int, stop: int, step: int) -> int:
    """How many multiples of ``step`` lie in [start, stop)."""
    return (stop - 1) // step - (start - 1) // step if stop > start else 0


@dataclass(frozen=True)
class RowSample:
    """Whole rows (features and target as read, NaN and inf included) with their indices.

    Attributes
    ----------
    rows : ndarray of int64
        0-based row indices, ascending.
    X : ndarray, shape (len(rows), n_features)
    y : ndarray or None
    level : int
        Every ``2**level``-th row is kept.
    capacity : int
    """

    rows: np.ndarray
    X: np.ndarray
    y: np.ndarray | None
    level: int
    capacity: int

    @classmethod
    def of_block(
        cls, X: np.ndarray, y: np.ndarray | None, first_row: int, capacity: int
    ) -> RowSample:
        """The sample of consecutive rows starting at ``first_row``."""
        n = X.shape[0]
        level = 0
        while _multiples(first_row, first_row + n, 1 << level) > capacity:
            level += 1
        step = 1 << level
        start = -first_row % step
        return cls(
            rows=np.arange(first_row + start, first_row + n, step, dtype=np.int64),
            X=X[start::step].copy(),
            y=None if y is None else y[start::step].copy(),
            level=level,
            capacity=capacity,
        )

    def thinned(self, level: int) -> RowSample:
        """Only the rows that are multiples of ``2**level`` (``level >= self.level``)."""
        keep = self.rows % (1 << level) == 0
        return RowSample(
            self.rows[keep],
            self.X[keep],
            None if self.y is None else self.y[keep],
            level,
            self.capacity,
        )

    def merge(self, other: RowSample) -> RowSample:
        """The sample of both parts' rows (which do not overlap)."""
        level = max(self.level, other.level)
        a, b = self.thinned(level), other.thinned(level)
        order = np.argsort(np.concatenate([a.rows, b.rows]), kind="stable")
        merged = RowSample(
            np.concatenate([a.rows, b.rows])[order],
            np.concatenate([a.X, b.X])[order],
            None if a.y is None or b.y is None else np.concatenate([a.y, b.y])[order],
            level,
            min(self.capacity, other.capacity),
        )
        while merged.rows.size > merged.capacity:
            merged = merged.thinned(merged.level + 1)
        return merged
