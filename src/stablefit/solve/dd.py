"""Double-double arithmetic on NumPy arrays: error-free transformations, vectorized.

A double-double value is a pair (hi, lo) of float64 arrays with |lo| <= ulp(hi)/2 whose
sum carries about 32 significant digits. Products use Dekker's splitting rather than a
fused multiply-add, so the results are the same on every platform (``np.longdouble`` is
plain double on Windows and macOS arm64 and would not be). Dekker's split overflows
for magnitudes above about 1e300: callers scale their data by powers of two first.
"""

from __future__ import annotations

import numpy as np

_SPLITTER = 134217729.0  # 2**27 + 1


def two_sum(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """s + e == a + b exactly, with s = fl(a + b) (Knuth)."""
    s = a + b
    bb = s - a
    e = (a - (s - bb)) + (b - bb)
    return s, e


def split(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """a == hi + lo exactly, each with at most 26 significant bits (Dekker)."""
    c = _SPLITTER * a
    hi = c - (c - a)
    return hi, a - hi


def two_prod(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """p + e == a * b exactly, with p = fl(a * b) (Dekker; no FMA needed)."""
    p = a * b
    a_hi, a_lo = split(a)
    b_hi, b_lo = split(b)
    e = ((a_hi * b_hi - p) + a_hi * b_lo + a_lo * b_hi) + a_lo * b_lo
    return p, e


def dd_sum(hi: np.ndarray, lo: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Sum double-double values along ``axis`` by a pairwise tree of error-free additions.

    The rounding errors of every level are gathered and added at the end; they are
    already of the order of the unit roundoff times the partial sums, so their own
    rounding lies near the double-double level.
    """
    hi = np.moveaxis(np.asarray(hi, dtype=np.float64), axis, 0)
    lo = np.moveaxis(np.asarray(lo, dtype=np.float64), axis, 0)
    errors = lo.sum(axis=0)
    while hi.shape[0] > 1:
        if hi.shape[0] % 2:
            hi = np.concatenate([hi, np.zeros((1, *hi.shape[1:]))])
        s, e = two_sum(hi[0::2], hi[1::2])
        errors = errors + e.sum(axis=0)
        hi = s
    total = hi[0] if hi.shape[0] else np.zeros(hi.shape[1:])
    return two_sum(total, errors)


def dd_add(
    a_hi: np.ndarray, a_lo: np.ndarray, b_hi: np.ndarray, b_lo: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(a_hi + a_lo) + (b_hi + b_lo), renormalized."""
    s, e = two_sum(a_hi, b_hi)
    e = e + (a_lo + b_lo)
    return two_sum(s, e)


def dd_mul(
    a_hi: np.ndarray, a_lo: np.ndarray, b_hi: np.ndarray, b_lo: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(a_hi + a_lo) * (b_hi + b_lo), renormalized (the lo*lo term is below the precision)."""
    p, e = two_prod(a_hi, b_hi)
    e = e + (a_hi * b_lo + a_lo * b_hi)
    return two_sum(p, e)


def dd_rmatvec(
    A_hi: np.ndarray, A_lo: np.ndarray | None, r_hi: np.ndarray, r_lo: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(A_hi + A_lo)ᵀ @ (r_hi + r_lo) in double-double, A of shape (n, k)."""
    p, e = two_prod(A_hi, r_hi[:, None])
    e = e + A_hi * r_lo[:, None]
    if A_lo is not None:
        e = e + A_lo * r_hi[:, None]
    return dd_sum(p, e, axis=0)


def dd_gram(
    A_hi: np.ndarray, A_lo: np.ndarray | None, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(A_hi + A_lo)ᵀ W (A_hi + A_lo) in double-double, shape (k, k); W = diag(weights),
    the identity without them."""
    k = A_hi.shape[1]
    G_hi, G_lo = np.zeros((k, k)), np.zeros((k, k))
    for j in range(k):
        column_hi = A_hi[:, j]
        column_lo = np.zeros_like(column_hi) if A_lo is None else A_lo[:, j]
        if weights is not None:
            column_hi, column_lo = dd_mul(column_hi, column_lo, weights, np.zeros_like(weights))
        G_hi[:, j], G_lo[:, j] = dd_rmatvec(A_hi, A_lo, column_hi, column_lo)
    return G_hi, G_lo


def dd_div(
    a_hi: np.ndarray, a_lo: np.ndarray, b_hi: np.ndarray, b_lo: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(a_hi + a_lo) / (b_hi + b_lo) with one correction step."""
    q1 = a_hi / b_hi
    p_hi, p_lo = dd_mul(b_hi, b_lo, q1, np.zeros_like(q1))
    r_hi, r_lo = dd_add(a_hi, a_lo, -p_hi, -p_lo)
    return two_sum(q1, (r_hi + r_lo) / b_hi)


def dd_sqrt(a_hi: np.ndarray, a_lo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Square root of a non-negative double-double with one Newton step."""
    h = np.sqrt(a_hi)
    p_hi, p_lo = two_prod(h, h)
    r_hi, r_lo = dd_add(a_hi, a_lo, -p_hi, -p_lo)
    with np.errstate(divide="ignore", invalid="ignore"):
        correction = np.where(h > 0, (r_hi + r_lo) / (2.0 * h), 0.0)
    return two_sum(h, correction)


def dd_cholesky(G_hi: np.ndarray, G_lo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lower Cholesky factor L (G = L Lᵀ) of a double-double matrix, column by column."""
    k = G_hi.shape[0]
    L_hi, L_lo = np.zeros((k, k)), np.zeros((k, k))
    for j in range(k):
        rows = slice(j, k)
        p_hi, p_lo = dd_mul(L_hi[rows, :j], L_lo[rows, :j], L_hi[j, :j], L_lo[j, :j])
        s_hi, s_lo = dd_sum(p_hi, p_lo, axis=1) if j else (np.zeros(k - j), np.zeros(k - j))
        c_hi, c_lo = dd_add(G_hi[rows, j], G_lo[rows, j], -s_hi, -s_lo)
        d_hi, d_lo = dd_sqrt(c_hi[:1], c_lo[:1])
        L_hi[j, j], L_lo[j, j] = d_hi[0], d_lo[0]
        if j + 1 < k:
            q_hi, q_lo = dd_div(c_hi[1:], c_lo[1:], d_hi, d_lo)
            L_hi[j + 1 :, j], L_lo[j + 1 :, j] = q_hi, q_lo
    return L_hi, L_lo


def dd_forward_solve(
    L_hi: np.ndarray, L_lo: np.ndarray, B_hi: np.ndarray, B_lo: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Solve L X = B (L lower triangular, B of shape (k, m)) in double-double."""
    k = L_hi.shape[0]
    X_hi, X_lo = np.zeros_like(B_hi), np.zeros_like(B_hi)
    for i in range(k):
        p_hi, p_lo = dd_mul(L_hi[i, :i, None], L_lo[i, :i, None], X_hi[:i], X_lo[:i])
        s_hi, s_lo = dd_sum(p_hi, p_lo, axis=0) if i else (0.0 * B_hi[0], 0.0 * B_hi[0])
        c_hi, c_lo = dd_add(B_hi[i], B_lo[i], -s_hi, -s_lo)
        X_hi[i], X_lo[i] = dd_div(
            c_hi, c_lo, np.full_like(c_hi, L_hi[i, i]), np.full_like(c_hi, L_lo[i, i])
        )
    return X_hi, X_lo


def dd_matmul(
    A_hi: np.ndarray, A_lo: np.ndarray, B_hi: np.ndarray, B_lo: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(A_hi + A_lo) @ (B_hi + B_lo) in double-double for small matrices (m, k) @ (k, p)."""
    p_hi, p_lo = dd_mul(A_hi[:, :, None], A_lo[:, :, None], B_hi[None, :, :], B_lo[None, :, :])
    return dd_sum(p_hi, p_lo, axis=1)
