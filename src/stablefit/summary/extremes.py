"""The smallest and largest values of a column with their rows, kept in one pass.

A column keeps its ``k`` smallest values and, of the others, its ``k`` largest, each with
its 0-based row. Ties go to the earlier row at both ends: the smallest are the first ``k``
pairs in the order (value, row), the largest the first ``k`` of the remaining pairs in the
order (-value, row). The choice depends on the set of (value, row) pairs alone, so it merges:
the extremes of a union are the extremes of the union of its parts' extremes, and values
may be offered in any order and any number of calls.

Each end is a buffer sorted by its order. A value goes into a buffer only when the buffer
has room or the value beats the worst one kept, so for most data a pass is O(n): two
comparisons per value.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from stablefit.jit import kernel


class Buffers(NamedTuple):
    """The kept pairs of p columns. Index 0 of the first axis is the low end, keyed by
    value; index 1 the high end, keyed by -value: one insertion, "ascending by (key, row)",
    serves both."""

    keys: np.ndarray  # (2, p, k)
    rows: np.ndarray  # (2, p, k) int64
    counts: np.ndarray  # (2, p) int64: how many of each end are kept


def new_buffers(p: int, k: int) -> Buffers:
    """Empty buffers for p columns keeping k pairs at each end."""
    return Buffers(
        np.empty((2, p, k)), np.empty((2, p, k), dtype=np.int64), np.zeros((2, p), dtype=np.int64)
    )


@kernel(cache=True, nogil=True)
def offer(keys, kept_rows, counts, values, rows):  # pragma: no cover
    """Offer each pair (values[j, i], rows[i]) to column j's buffers (in place)."""
    k = keys.shape[2]
    p, n = values.shape
    for j in range(p):
        # Beyond the cut-offs a value cannot enter a buffer; a tie with the worst value kept
        # takes the full comparison below.
        low_cut = keys[0, j, k - 1] if counts[0, j] == k else np.inf
        high_cut = -keys[1, j, k - 1] if counts[1, j] == k else -np.inf
        for i in range(n):
            key = values[j, i]
            if key > low_cut and key < high_cut:
                continue
            row = rows[i]
            end = 0
            while True:
                count = counts[end, j]
                if count == k:
                    last_key, last_row = keys[end, j, k - 1], kept_rows[end, j, k - 1]
                    if not (key < last_key or (key == last_key and row < last_row)):
                        # Not kept at the low end: a candidate for the high end.
                        if end == 0:
                            end, key = 1, -key
                            continue
                        break
                    position = k - 1
                else:
                    position = count
                    counts[end, j] = count + 1
                while position > 0 and (
                    key < keys[end, j, position - 1]
                    or (key == keys[end, j, position - 1] and row < kept_rows[end, j, position - 1])
                ):
                    keys[end, j, position] = keys[end, j, position - 1]
                    kept_rows[end, j, position] = kept_rows[end, j, position - 1]
                    position -= 1
                keys[end, j, position] = key
                kept_rows[end, j, position] = row
                if count < k or end == 1:
                    break
                # The low end pushed out its last pair: a candidate for the high end.
                end, key, row = 1, -last_key, last_row
            if counts[0, j] == k:
                low_cut = keys[0, j, k - 1]
            if counts[1, j] == k:
                high_cut = -keys[1, j, k - 1]


@kernel(cache=True, nogil=True)
def _finish(keys, kept_rows, counts):  # pragma: no cover
    _, p, k = keys.shape
    values = np.empty((p, 2 * k))
    rows = np.empty((p, 2 * k), dtype=np.int64)
    for j in range(p):
        n_low = counts[0, j]
        values[j, :n_low] = keys[0, j, :n_low]
        rows[j, :n_low] = kept_rows[0, j, :n_low]
        # The high end is in (-value, row) order: insertion-sort it by (value, row).
        for i in range(counts[1, j]):
            value, row = -keys[1, j, i], kept_rows[1, j, i]
            position = n_low + i
            while position > n_low and (
                value < values[j, position - 1]
                or (value == values[j, position - 1] and row < rows[j, position - 1])
            ):
                values[j, position] = values[j, position - 1]
                rows[j, position] = rows[j, position - 1]
                position -= 1
            values[j, position] = value
            rows[j, position] = row
    return values, rows


def kept(buffers: Buffers) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per column, the kept (values, rows) sorted by value, then row."""
    values, rows = _finish(*buffers)
    return [(values[j, :n], rows[j, :n]) for j, n in enumerate(buffers.counts.sum(axis=0))]


def select(values: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` smallest and ``k`` largest of finite ``values`` with their ``rows``.

    Parameters
    ----------
    values : ndarray of float64
        Finite values, in any order.
    rows : ndarray of int64
        The row of each value.
    k : int
        How many to keep at each end.

    Returns
    -------
    values, rows : ndarray
        At most ``2 * k`` pairs sorted by value, then row (see the module docstring for
        which pairs are kept when values tie).
    """
    buffers = new_buffers(1, k)
    offer(
        *buffers,
        np.asarray(values, dtype=np.float64).reshape(1, -1),
        np.asarray(rows, dtype=np.int64),
    )
    return kept(buffers)[0]
