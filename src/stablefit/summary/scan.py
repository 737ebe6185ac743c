"""Compiled passes over a block: sums, ranges, the centered copy and, with detail, more.

The common case — a block without NaN or inf — needs per-column sums, minima and maxima
and a centered copy of the block for the cross-product. As NumPy expressions those are
half a dozen passes over the block (stacking X and y, isfinite, mean, min, max, the
subtraction); compiled, it is one pass that reads the block and one that writes the copy.

With detail, one pass writes the block column by column — the layout the extremes, the
cross-product and the quantile sketches then read — and gathers everything else on the
way, NaN and inf included (:class:`DetailScan`).
"""

from __future__ import annotations

import numpy as np

from stablefit.jit import kernel
from stablefit.summary import extremes

# Rows centered at their own mean at a time: they are read once from memory for their
# sums and ranges and once more from the second-level cache to be centered.
RUN_ROWS = 256


@kernel(cache=True, nogil=True)
def _center_runs(X, y, has_y, centered, write, shifts, sums, counts, squares):  # pragma: no cover
    n, d = X.shape
    p = d + 1 if has_y else d
    low = np.full(p, np.inf)
    high = np.full(p, -np.inf)
    total = np.zeros(p)
    for run in range(-(-n // RUN_ROWS)):
        first = run * RUN_ROWS
        last = min(n, first + RUN_ROWS)
        total[:] = 0.0
        # Column by column within a row, without branches: it vectorizes. A NaN or inf
        # (or an overflowing sum) leaves its column's total non-finite.
        for i in range(first, last):
            row = X[i]
            for j in range(d):
                v = row[j]
                total[j] += v
                # np.minimum, not min(): it vectorizes.
                low[j] = np.minimum(low[j], v)
                high[j] = np.maximum(high[j], v)
        if has_y:
            for i in range(first, last):
                v = y[i]
                total[d] += v
                low[d] = min(low[d], v)
                high[d] = max(high[d], v)
        for j in range(p):
            if not np.isfinite(total[j]):
                return False, low, high
        shift, added = shifts[run], sums[run]
        for j in range(p):
            shift[j] = total[j] / (last - first)
            added[j] = 0.0
        # Without ``write``, only the squares of the centered values are added up (the
        # diagonal of the centered cross-product), in a loop of their own.
        if write:
            for i in range(first, last):
                row, out = X[i], centered[i]
                for j in range(d):
                    c = row[j] - shift[j]
                    out[j] = c
                    added[j] += c
        else:
            for i in range(first, last):
                row = X[i]
                for j in range(d):
                    c = row[j] - shift[j]
                    added[j] += c
                    squares[j] += c * c
        if has_y:
            for i in range(first, last):
                c = y[i] - shifts[run, d]
                if write:
                    centered[i, d] = c
                else:
                    squares[d] += c * c
                sums[run, d] += c
        counts[run] = last - first
    return True, low, high


def center_runs(
    X: np.ndarray, y: np.ndarray | None, centered: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """[X, y] with each run of RUN_ROWS rows less its own mean, into ``centered[:n]``.

    Returns the columns' minima and maxima, and per run its shift (the run's mean,
    rounded), the column sums of what was written (the shift's rounding) and its rows;
    None when a value is NaN or inf (or a sum overflows): the caller then takes the
    general path. With ``centered`` None nothing is written, and the last of the returned
    arrays holds each column's sum of squares of the centered values (the diagonal of
    their cross-product; zeros otherwise).
    """
    runs = -(-X.shape[0] // RUN_ROWS)
    p = X.shape[1] + int(y is not None)
    shifts, sums = np.empty((runs, p)), np.empty((runs, p))
    counts = np.empty(runs, dtype=np.int64)
    squares = np.zeros(p)
    finite, low, high = _center_runs(
        np.ascontiguousarray(X, dtype=np.float64),
        np.zeros(1) if y is None else np.ascontiguousarray(y, dtype=np.float64),
        y is not None,
        np.zeros((1, 1)) if centered is None else centered,
        centered is not None,
        shifts,
        sums,
        counts,
        squares,
    )
    return (low, high, shifts, sums, counts, squares) if finite else None


# Rows scanned at a time: a piece of every column stays in the processor's cache while the
# extremes and the cross-product read it again.
SCAN_ROWS = 8192
# Rows transposed at a time: the rows read stay in the first-level cache.
TRANSPOSE_ROWS = 64
# Rows centered at a time for the cross-product.
PRODUCT_ROWS = 256


@kernel(cache=True, nogil=True)
def _center(columns, bases, start, m, mean, centered):  # pragma: no cover
    """``centered[a, :m] = columns[a, bases[a] + start:][:m] - mean[a]``."""
    for a in range(columns.shape[0]):
        base = bases[a] + start
        for i in range(m):
            centered[a, i] = columns[a, base + i] - mean[a]


# Reassociating the sums lets the compiler vectorize them. They add up values already
# centered, in their own function: reassociation cannot reach back into the subtraction.
@kernel(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _add_products(centered, m, products, residual_sum):  # pragma: no cover
    p = products.shape[0]
    for a in range(p):
        total = 0.0
        for i in range(m):
            total += centered[a, i]
        residual_sum[a] += total
        # Four products at a time share the loads of column a.
        b = 0
        while b + 4 <= a + 1:
            t0 = t1 = t2 = t3 = 0.0
            for i in range(m):
                v = centered[a, i]
                t0 += v * centered[b, i]
                t1 += v * centered[b + 1, i]
                t2 += v * centered[b + 2, i]
                t3 += v * centered[b + 3, i]
            products[a, b] += t0
            products[a, b + 1] += t1
            products[a, b + 2] += t2
            products[a, b + 3] += t3
            b += 4
        for c in range(b, a + 1):
            total = 0.0
            for i in range(m):
                total += centered[a, i] * centered[c, i]
            products[a, c] += total


@kernel(cache=True, nogil=True)
def _piece_moments(columns, bases, m, total, centered):  # pragma: no cover
    """Mean and co-moment of m rows, ``columns[a, bases[a]:][:m]``, every value finite.

    The rows are centered at their own mean; the residual sum corrects for its rounding,
    as in CoMoments.of_centered.
    """
    p = columns.shape[0]
    products = np.zeros((p, p))
    residual_sum = np.zeros(p)
    mean = total / m
    for start in range(0, m, PRODUCT_ROWS):
        size = min(m - start, PRODUCT_ROWS)
        _center(columns, bases, start, size, mean, centered)
        _add_products(centered, size, products, residual_sum)
    for a in range(p):
        for b in range(a + 1):
            products[a, b] -= residual_sum[a] * residual_sum[b] / m
            products[b, a] = products[a, b]
        mean[a] += residual_sum[a] / m
    return mean, products


@kernel(cache=True, nogil=True)
def _merge_moments(moments, m, mean, comoment):  # pragma: no cover
    """Merge m rows' mean and co-moment into the running ones (Chan, Golub and LeVeque's
    update, as CoMoments.merge does)."""
    count, running_mean, running_comoment = moments
    seen = count[0]
    both = seen + m
    p = mean.size
    for a in range(p):
        delta_a = mean[a] - running_mean[a]
        for b in range(p):
            running_comoment[a, b] += comoment[a, b] + delta_a * (mean[b] - running_mean[b]) * (
                seen * m / both
            )
    for a in range(p):
        running_mean[a] += (mean[a] - running_mean[a]) * (m / both)
    count[0] = both


@kernel(cache=True, nogil=True)
def _merge_column(column_moments, a, m, mean, m2):  # pragma: no cover
    """Merge m values of column a with this mean and m2 into its running moments."""
    count, running_mean, running_m2 = column_moments
    seen = count[a]
    both = seen + m
    delta = mean - running_mean[a]
    running_mean[a] += delta * (m / both)
    running_m2[a] += m2 + delta * delta * (seen * m / both)
    count[a] = both


@kernel(cache=True, nogil=True)
def _record(rows, counts, j, row):  # pragma: no cover
    """Count a NaN or inf of column j; keep its row among the first few."""
    if counts[j] < rows.shape[1]:
        rows[j, counts[j]] = row
    counts[j] += 1


@kernel(cache=True, nogil=True)
def _nonfinite_piece(
    columns, fill, m, first_row, piece, state, centered, gathered
):  # pragma: no cover
    """Merge m rows, written at ``columns[j, fill[j]:]``, some of whose values are NaN or
    inf: count and place those, move each column's finite values together and merge their
    statistics; the co-moments take the complete rows. False if a sum overflows.

    ``piece`` holds the columns' sums, minima, maxima and fractional parts over the m rows:
    right for the columns whose sum is finite, which therefore take the fast way.
    """
    piece_total, piece_low, piece_high, piece_fraction = piece
    low, high, fraction, moments, column_moments, nonfinite, extreme_buffers = state
    nan_counts, nan_rows, inf_counts, inf_rows = nonfinite
    keys, kept_rows, counts = extreme_buffers
    p = columns.shape[0]
    complete = np.ones(m, dtype=np.bool_)
    for j in range(p):
        if not np.isfinite(piece_total[j]):
            for i in range(m):
                if not np.isfinite(columns[j, fill[j] + i]):
                    complete[i] = False
    complete_rows = np.flatnonzero(complete)
    n_complete = complete_rows.size
    for j in range(p):
        for c in range(n_complete):
            gathered[j, c] = columns[j, fill[j] + complete_rows[c]]
    rows = np.arange(first_row, first_row + m)
    for j in range(p):
        base = fill[j]
        keep = (keys[:, j : j + 1], kept_rows[:, j : j + 1], counts[:, j : j + 1])
        if np.isfinite(piece_total[j]):
            low[j] = min(low[j], piece_low[j])
            high[j] = max(high[j], piece_high[j])
            fraction[j] += piece_fraction[j]
            extremes.offer(*keep, columns[j : j + 1, base : base + m], rows)
            mean, comoment = _piece_moments(
                columns[j : j + 1], fill[j : j + 1], m, piece_total[j : j + 1], centered
            )
            _merge_column(column_moments, j, m, mean[0], comoment[0, 0])
            fill[j] = base + m
            continue
        n_finite = 0
        total = 0.0
        for i in range(m):
            v = columns[j, base + i]
            if np.isnan(v):
                _record(nan_rows, nan_counts, j, first_row + i)
            elif np.isinf(v):
                _record(inf_rows, inf_counts, j, first_row + i)
            else:
                columns[j, base + n_finite] = v
                rows[n_finite] = first_row + i
                n_finite += 1
                total += v
                low[j] = min(low[j], v)
                high[j] = max(high[j], v)
                fraction[j] += abs(v - np.floor(v))
        if not np.isfinite(total):
            return False
        if n_finite:
            extremes.offer(*keep, columns[j : j + 1, base : base + n_finite], rows[:n_finite])
            mean, comoment = _piece_moments(
                columns[j : j + 1], fill[j : j + 1], n_finite, np.array([total]), centered
            )
            _merge_column(column_moments, j, n_finite, mean[0], comoment[0, 0])
        fill[j] = base + n_finite
        rows[:] = np.arange(first_row, first_row + m)
    if n_complete:
        total = np.zeros(p)
        for j in range(p):
            for c in range(n_complete):
                total[j] += gathered[j, c]
        mean, comoment = _piece_moments(
            gathered, np.zeros(p, dtype=np.int64), n_complete, total, centered
        )
        _merge_moments(moments, n_complete, mean, comoment)
    return True


@kernel(cache=True, nogil=True)
def _scan_detail(X, y, has_y, first_row, columns, fill, state):  # pragma: no cover
    low, high, fraction, moments, column_moments, _, extreme_buffers = state
    keys, kept_rows, counts = extreme_buffers
    n, d = X.shape
    p = d + 1 if has_y else d
    centered = np.empty((p, PRODUCT_ROWS))
    gathered = np.empty((p, min(n, SCAN_ROWS)))
    piece_total = np.empty(p)
    piece_low = np.empty(p)
    piece_high = np.empty(p)
    piece_fraction = np.empty(p)
    for piece in range(0, n, SCAN_ROWS):
        piece_end = min(n, piece + SCAN_ROWS)
        m = piece_end - piece
        piece_total[:] = 0.0
        piece_low[:] = np.inf
        piece_high[:] = -np.inf
        piece_fraction[:] = 0.0
        # Column by column within a few rows: the inner loop has no branch, so it stays fast.
        for start in range(piece, piece_end, TRANSPOSE_ROWS):
            stop = min(piece_end, start + TRANSPOSE_ROWS)
            for j in range(p):
                source = X[:, j] if j < d else y
                base = fill[j] - piece
                column_total, column_low, column_high = piece_total[j], piece_low[j], piece_high[j]
                column_fraction = piece_fraction[j]
                for i in range(start, stop):
                    v = source[i]
                    columns[j, base + i] = v
                    column_total += v
                    column_low = min(column_low, v)
                    column_high = max(column_high, v)
                    column_fraction += abs(v - np.floor(v))
                piece_total[j], piece_low[j], piece_high[j] = column_total, column_low, column_high
                piece_fraction[j] = column_fraction
        # A NaN or inf makes its column's total non-finite (so does an overflowing sum).
        if not np.all(np.isfinite(piece_total)):
            statistics = (piece_total, piece_low, piece_high, piece_fraction)
            if not _nonfinite_piece(
                columns, fill, m, first_row + piece, statistics, state, centered, gathered
            ):
                return False
            continue
        rows = np.arange(first_row + piece, first_row + piece_end)
        for j in range(p):
            low[j] = min(low[j], piece_low[j])
            high[j] = max(high[j], piece_high[j])
            fraction[j] += piece_fraction[j]
            extremes.offer(
                keys[:, j : j + 1],
                kept_rows[:, j : j + 1],
                counts[:, j : j + 1],
                columns[j : j + 1, fill[j] : fill[j] + m],
                rows,
            )
        mean, comoment = _piece_moments(columns, fill, m, piece_total, centered)
        _merge_moments(moments, m, mean, comoment)
        for j in range(p):
            _merge_column(column_moments, j, m, mean[j], comoment[j, j])
        fill += m
    return True


class DetailScan:
    """Compiled passes over consecutive blocks, gathering what a detailed Summary needs.

    :meth:`add` writes each column's finite values one after the other into row j of
    ``columns`` (p, rows), the first ``fill[j]`` of them, and gathers on the way: per column
    the count, minimum, maximum, moments and integrality of the finite values, how many
    are NaN or inf and the first rows of each, the extremes with their rows
    (:mod:`stablefit.summary.extremes`); and the co-moments of the complete rows. A piece
    of the block is centered at its own mean while still in the cache and merged into the
    running moments (Chan, Golub and LeVeque's update). Pieces without NaN or inf take a
    loop without branches; in the others, the columns that hold NaN or inf are sorted out
    value by value.
    """

    def __init__(self, p: int, n: int, k: int) -> None:
        self.columns = np.empty((p, n))
        self.fill = np.zeros(p, dtype=np.int64)
        self.low = np.full(p, np.inf)
        self.high = np.full(p, -np.inf)
        self._fraction = np.zeros(p)
        # Complete rows: count, mean and co-moment; then each column's finite values.
        self.moments = (np.zeros(1, dtype=np.int64), np.zeros(p), np.zeros((p, p)))
        self.column_moments = (np.zeros(p, dtype=np.int64), np.zeros(p), np.zeros(p))
        self.nonfinite = (
            np.zeros(p, dtype=np.int64),
            np.empty((p, k), dtype=np.int64),
            np.zeros(p, dtype=np.int64),
            np.empty((p, k), dtype=np.int64),
        )
        self.buffers = extremes.new_buffers(p, k)

    @property
    def is_integer(self) -> np.ndarray:
        return self._fraction == 0.0

    def add(self, X: np.ndarray, y: np.ndarray | None, first_row: int) -> bool:
        """Scan the block [X, y] whose rows are numbered from ``first_row``; False (and the
        scan of no use) if a column's sum overflows."""
        return _scan_detail(
            np.ascontiguousarray(X, dtype=np.float64),
            np.zeros(1) if y is None else np.ascontiguousarray(y, dtype=np.float64),
            y is not None,
            first_row,
            self.columns,
            self.fill,
            (
                self.low,
                self.high,
                self._fraction,
                self.moments,
                self.column_moments,
                self.nonfinite,
                tuple(self.buffers),
            ),
        )
