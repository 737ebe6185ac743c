"""One compiled pass over a block of all-finite rows: sums, ranges and the centered copy.

The common case — a block without NaN or inf — needs per-column sums, minima and maxima
and a centered copy of the block for the cross-product. As NumPy expressions those are
half a dozen passes over the block (stacking X and y, isfinite, mean, min, max, the
subtraction); compiled, it is one pass that reads the block and one that writes the copy.

With detail, one pass writes the block column by column — the layout the extremes, the
cross-product and the quantile sketches then read — and checks integrality on the way.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from stablefit.summary import extremes


@njit(cache=True, nogil=True)
def _scan(X, y, has_y):  # pragma: no cover
    n, d = X.shape
    p = d + 1 if has_y else d
    total = np.zeros(p)
    low = np.full(p, np.inf)
    high = np.full(p, -np.inf)
    finite = True
    for i in range(n):
        for j in range(p):
            v = X[i, j] if j < d else y[i]
            if not np.isfinite(v):
                finite = False
            total[j] += v
            if v < low[j]:
                low[j] = v
            if v > high[j]:
                high[j] = v
    return finite, total, low, high


@njit(cache=True, nogil=True)
def _centered(X, y, has_y, mean):  # pragma: no cover
    n, d = X.shape
    p = d + 1 if has_y else d
    out = np.empty((n, p))
    for i in range(n):
        for j in range(d):
            out[i, j] = X[i, j] - mean[j]
        if has_y:
            out[i, d] = y[i] - mean[d]
    return out


def scan_block(
    X: np.ndarray, y: np.ndarray | None
) -> tuple[bool, np.ndarray, np.ndarray, np.ndarray]:
    """(all finite, column sums, minima, maxima) of [X, y]; sums may be inf or NaN when not
    all finite, and the caller then takes the general path."""
    has_y = y is not None
    return _scan(
        np.ascontiguousarray(X, dtype=np.float64),
        np.zeros(1) if y is None else np.ascontiguousarray(y, dtype=np.float64),
        has_y,
    )


def centered_block(X: np.ndarray, y: np.ndarray | None, mean: np.ndarray) -> np.ndarray:
    """[X, y] - mean as one new C-contiguous array."""
    return _centered(
        np.ascontiguousarray(X, dtype=np.float64),
        np.zeros(1) if y is None else np.ascontiguousarray(y, dtype=np.float64),
        y is not None,
        mean,
    )


# Rows scanned at a time: a piece of every column stays in the processor's cache while the
# extremes and the cross-product read it again.
SCAN_ROWS = 8192
# Rows transposed at a time: the rows read stay in the first-level cache.
TRANSPOSE_ROWS = 64
# Rows centered at a time for the cross-product.
PRODUCT_ROWS = 256


@njit(cache=True, nogil=True)
def _center(columns, start, m, mean, centered):  # pragma: no cover
    """``centered[:, :m] = columns[:, start:start + m] - mean``."""
    for a in range(columns.shape[0]):
        for i in range(m):
            centered[a, i] = columns[a, start + i] - mean[a]


# Reassociating the sums lets the compiler vectorize them. They add up values already
# centered, in their own function: reassociation cannot reach back into the subtraction.
@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _add_products(centered, m, products, residual_sum):  # pragma: no cover
    p = centered.shape[0]
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


@njit(cache=True, nogil=True)
def _centered_products(columns, mean, centered):  # pragma: no cover
    p, n = columns.shape
    products = np.zeros((p, p))
    residual_sum = np.zeros(p)
    for start in range(0, n, PRODUCT_ROWS):
        m = min(n - start, PRODUCT_ROWS)
        _center(columns, start, m, mean, centered)
        _add_products(centered, m, products, residual_sum)
    for a in range(p):
        for b in range(a):
            products[b, a] = products[a, b]
    return products, residual_sum


@njit(cache=True, nogil=True)
def _scan_detail(
    X, y, has_y, rows, out, low, high, fraction, moments, keys, kept_rows, counts
):  # pragma: no cover
    n, d = X.shape
    p = d + 1 if has_y else d
    count, mean, comoment = moments
    centered = np.empty((p, PRODUCT_ROWS))
    for piece in range(0, n, SCAN_ROWS):
        piece_end = min(n, piece + SCAN_ROWS)
        m = piece_end - piece
        total = np.zeros(p)
        # Column by column within a few rows: the inner loop has no branch, so it stays fast.
        for start in range(piece, piece_end, TRANSPOSE_ROWS):
            stop = min(piece_end, start + TRANSPOSE_ROWS)
            for j in range(p):
                source = X[:, j] if j < d else y
                column_total, column_low, column_high = total[j], low[j], high[j]
                column_fraction = fraction[j]
                for i in range(start, stop):
                    v = source[i]
                    out[j, i] = v
                    column_total += v
                    column_low = min(column_low, v)
                    column_high = max(column_high, v)
                    column_fraction += abs(v - np.floor(v))
                total[j], low[j], high[j] = column_total, column_low, column_high
                fraction[j] = column_fraction
        # A NaN or inf makes its column's total non-finite (so does an overflowing sum).
        for j in range(p):
            if not np.isfinite(total[j]):
                return False
        columns = out[:, piece:piece_end]
        extremes.offer(keys, kept_rows, counts, columns, rows[piece:piece_end])
        # The piece's co-moments about its own mean, merged into the running ones
        # (Chan, Golub and LeVeque's update, as CoMoments.merge does).
        piece_mean = total / m
        products, residual_sum = _centered_products(columns, piece_mean, centered)
        for a in range(p):
            piece_mean[a] += residual_sum[a] / m
        seen = count[0]
        both = seen + m
        for a in range(p):
            delta_a = piece_mean[a] - mean[a]
            for b in range(p):
                delta_b = piece_mean[b] - mean[b]
                comoment[a, b] += (
                    products[a, b]
                    - residual_sum[a] * residual_sum[b] / m
                    + delta_a * delta_b * (seen * m / both)
                )
        for a in range(p):
            mean[a] += (piece_mean[a] - mean[a]) * (m / both)
        count[0] = both
    return True


class DetailScan:
    """Compiled passes over consecutive all-finite blocks, gathering what a detailed
    Summary needs.

    :meth:`add` writes each block column by column into ``columns`` (p, rows), keeping
    per-column minima, maxima and integrality, the extremes with their rows
    (:mod:`stablefit.summary.extremes`) and the co-moments on the way. A piece of the
    block is centered at its own mean while still in the cache and merged into the running
    co-moments.
    """

    def __init__(self, p: int, n: int, k: int) -> None:
        self.columns = np.empty((p, n))
        self.low = np.full(p, np.inf)
        self.high = np.full(p, -np.inf)
        self._fraction = np.zeros(p)
        self.count = np.zeros(1, dtype=np.int64)
        self.mean = np.zeros(p)
        self.comoment = np.zeros((p, p))
        self.buffers = extremes.new_buffers(p, k)
        self._filled = 0

    @property
    def is_integer(self) -> np.ndarray:
        return self._fraction == 0.0

    def add(self, X: np.ndarray, y: np.ndarray | None, first_row: int) -> bool:
        """Scan the block [X, y] whose rows are numbered from ``first_row``; False (and the
        scan of no use) if a value is NaN or inf or a column sum overflows."""
        n = X.shape[0]
        out = self.columns[:, self._filled : self._filled + n]
        self._filled += n
        return _scan_detail(
            np.ascontiguousarray(X, dtype=np.float64),
            np.zeros(1) if y is None else np.ascontiguousarray(y, dtype=np.float64),
            y is not None,
            np.arange(first_row, first_row + n),
            out,
            self.low,
            self.high,
            self._fraction,
            (self.count, self.mean, self.comoment),
            *self.buffers,
        )
