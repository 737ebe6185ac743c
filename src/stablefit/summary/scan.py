"""One compiled pass over a block of all-finite rows: sums, ranges and the centered copy.

The common case — a block without NaN or inf — needs per-column sums, minima and maxima
and a centered copy of the block for the cross-product. As NumPy expressions those are
half a dozen passes over the block (stacking X and y, isfinite, mean, min, max, the
subtraction); compiled, it is one pass that reads the block and one that writes the copy.
"""

from __future__ import annotations

import numpy as np
from numba import njit


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
