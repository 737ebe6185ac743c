"""Compiled double-double kernels for the passes over the data (numba).

One pass of refinement forms r = y - c - Z b and g = Zᵀ r in double-double for every row:
about 40 floating-point operations per entry of Z. As NumPy array expressions that means
dozens of temporaries per block; compiled, it runs in registers at the speed of a
matrix-vector product. The arithmetic is the same error-free transformations as
:mod:`stablefit.solve.dd` (Knuth's two-sum, Dekker's split and product), compiled without
fast-math so that nothing is reassociated or fused.

The kernels release the GIL: :func:`stablefit.parallel.ordered_map` runs them on several
blocks at once.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_SPLITTER = 134217729.0  # 2**27 + 1


@njit(cache=True, nogil=True)
def _residual_gradient(Z_hi, Z_lo, has_lo, y, b_hi, b_lo, c_hi, c_lo):  # pragma: no cover
    n, k = Z_hi.shape
    b_head = np.empty(k)
    b_tail = np.empty(k)
    for j in range(k):
        t = _SPLITTER * b_hi[j]
        b_head[j] = t - (t - b_hi[j])
        b_tail[j] = b_hi[j] - b_head[j]
    r_hi = np.empty(n)
    r_lo = np.empty(n)
    g_sum = np.zeros(k)
    g_err = np.zeros(k)
    for i in range(n):
        # s + e accumulates y_i - c - Σ_j z_ij b_j exactly (to double-double).
        s = y[i] - c_hi
        v = s - y[i]
        e = (y[i] - (s - v)) + (-c_hi - v) - c_lo
        for j in range(k):
            a = Z_hi[i, j]
            p = a * b_hi[j]
            t = _SPLITTER * a
            a_head = t - (t - a)
            a_tail = a - a_head
            p_err = (a_head * b_head[j] - p) + a_head * b_tail[j] + a_tail * b_head[j]
            p_err += a_tail * b_tail[j] + a * b_lo[j]
            if has_lo:
                p_err += Z_lo[i, j] * b_hi[j]
            s_new = s - p
            v = s_new - s
            e += ((s - (s_new - v)) + (-p - v)) - p_err
            s = s_new
        h = s + e
        r_hi[i] = h
        r_lo[i] = e - (h - s)
        # g += z_i r_i, exactly to double-double.
        r = r_hi[i]
        t = _SPLITTER * r
        r_head = t - (t - r)
        r_tail = r - r_head
        for j in range(k):
            a = Z_hi[i, j]
            p = a * r
            t = _SPLITTER * a
            a_head = t - (t - a)
            a_tail = a - a_head
            p_err = (a_head * r_head - p) + a_head * r_tail + a_tail * r_head
            p_err += a_tail * r_tail + a * r_lo[i]
            if has_lo:
                p_err += Z_lo[i, j] * r
            s_old = g_sum[j]
            s_new = s_old + p
            v = s_new - s_old
            g_err[j] += ((s_old - (s_new - v)) + (p - v)) + p_err
            g_sum[j] = s_new
    return r_hi, r_lo, g_sum, g_err


def residual_gradient(
    Z_hi: np.ndarray,
    Z_lo: np.ndarray | None,
    y: np.ndarray,
    b_hi: np.ndarray,
    b_lo: np.ndarray,
    c_hi: float,
    c_lo: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """r = y - c - Z b and g = Zᵀ r, both in double-double, Z of shape (n, k).

    Returns (r_hi, r_lo, g_hi, g_lo); the pair sums are not renormalized beyond what
    double-double accuracy needs.
    """
    Z_hi = np.ascontiguousarray(Z_hi, dtype=np.float64)
    lo = np.zeros((1, 1)) if Z_lo is None else np.ascontiguousarray(Z_lo, dtype=np.float64)
    return _residual_gradient(
        Z_hi,
        lo,
        Z_lo is not None,
        np.ascontiguousarray(y, dtype=np.float64),
        np.ascontiguousarray(b_hi, dtype=np.float64),
        np.ascontiguousarray(b_lo, dtype=np.float64),
        float(c_hi),
        float(c_lo),
    )
