"""Compiled double-double kernels for the passes over the data (numba).

One pass of refinement forms r = y - c - Z b and g = Zᵀ r in double-double for every row:
about 25 floating-point operations per entry of Z. As NumPy array expressions that means
dozens of temporaries per block; compiled, it runs in registers at the speed of a
matrix-vector product. The arithmetic is the same error-free transformations as
:mod:`stablefit.solve.dd` (Knuth's two-sum; the product's error from one fused
multiply-add, which is exact, where :mod:`stablefit.solve.dd` uses Dekker's split),
compiled without fast-math so that nothing else is reassociated or fused.

The kernels release the GIL: :func:`stablefit.parallel.ordered_map` runs them on several
blocks at once.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from stablefit.jit import intrinsic, kernel


def _python_fma(a: float, b: float, c: float) -> float:
    """a·b + c with one rounding, in exact rational arithmetic (Python 3.11 has no
    math.fma); the int division that ends Fraction's float() is correctly rounded."""
    if not (math.isfinite(a) and math.isfinite(b) and math.isfinite(c)):
        return a * b + c
    return float(Fraction(a) * Fraction(b) + Fraction(c))


@intrinsic(_python_fma)
def _fma(typingctx, a, b, c):  # pragma: no cover
    """a·b + c with one rounding (LLVM's fma: the instruction, or libm's exact fma)."""
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils

    signature = types.float64(types.float64, types.float64, types.float64)

    def codegen(context, builder, signature, args):
        double = ir.DoubleType()
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(double, [double] * 3), "llvm.fma.f64"
        )
        return builder.call(function, args)

    return signature, codegen


@kernel(inline="always")
def _minus_product(s, e, a, a_lo, b_hi, b_lo):  # pragma: no cover
    """(s, e) - a·(b_hi + b_lo) - a_lo·b_hi: two-sum of the product, its error into e."""
    p = a * b_hi
    p_err = _fma(a, b_lo, _fma(a, b_hi, -p)) + a_lo * b_hi
    s_new = s - p
    v = s_new - s
    return s_new, e + (((s - (s_new - v)) + (-p - v)) - p_err)


@kernel(inline="always")
def _plus_pair(s, e, t, f):  # pragma: no cover
    s_new = s + t
    v = s_new - s
    return s_new, e + ((s - (s_new - v)) + (t - v)) + f


@kernel(inline="always")
def _times(r, r_tail, w):  # pragma: no cover
    """(r + r_tail)·w renormalized to a double-double pair (the error of r_tail·w is
    below its last place)."""
    p = r * w
    e = _fma(r, w, -p) + r_tail * w
    s = p + e
    return s, e - (s - p)


@kernel(cache=True, nogil=True)
def _residual_gradient(Z_hi, Z_lo, has_lo, y, b_hi, b_lo, c_hi, c_lo, w, has_w):  # pragma: no cover
    n, k = Z_hi.shape
    r_hi = np.empty(n)
    r_lo = np.empty(n)
    g_sum = np.zeros(k)
    g_err = np.zeros(k)
    # Four running sums over the four quarters of a row: one sum's chain of dependent
    # additions would leave the processor idle three cycles in four. (Quarters, not
    # interleaved columns: those get packed into vectors and run no faster than one sum.)
    q = k // 4
    for i in range(n):
        # (s0, e0) accumulates y_i - c - Σ_j z_ij b_j exactly (to double-double).
        s0 = y[i] - c_hi
        v = s0 - y[i]
        e0 = (y[i] - (s0 - v)) + (-c_hi - v) - c_lo
        s1 = s2 = s3 = e1 = e2 = e3 = 0.0
        for j in range(q):
            s0, e0 = _minus_product(
                s0, e0, Z_hi[i, j], Z_lo[i, j] if has_lo else 0.0, b_hi[j], b_lo[j]
            )
            m = j + q
            s1, e1 = _minus_product(
                s1, e1, Z_hi[i, m], Z_lo[i, m] if has_lo else 0.0, b_hi[m], b_lo[m]
            )
            m += q
            s2, e2 = _minus_product(
                s2, e2, Z_hi[i, m], Z_lo[i, m] if has_lo else 0.0, b_hi[m], b_lo[m]
            )
            m += q
            s3, e3 = _minus_product(
                s3, e3, Z_hi[i, m], Z_lo[i, m] if has_lo else 0.0, b_hi[m], b_lo[m]
            )
        for j in range(4 * q, k):
            s0, e0 = _minus_product(
                s0, e0, Z_hi[i, j], Z_lo[i, j] if has_lo else 0.0, b_hi[j], b_lo[j]
            )
        s0, e0 = _plus_pair(s0, e0, s1, e1)
        s2, e2 = _plus_pair(s2, e2, s3, e3)
        s, e = _plus_pair(s0, e0, s2, e2)
        r = s + e
        r_tail = e - (r - s)
        r_hi[i] = r
        r_lo[i] = r_tail
        if has_w:  # weighted least squares: g = Zᵀ W r
            r, r_tail = _times(r, r_tail, w[i])
        # g += z_i r_i, exactly to double-double; independent across j, so it vectorizes.
        for j in range(k):
            a = Z_hi[i, j]
            p = a * r
            p_err = _fma(a, r_tail, _fma(a, r, -p))
            if has_lo:
                p_err += Z_lo[i, j] * r
            s_old = g_sum[j]
            s_new = s_old + p
            v = s_new - s_old
            g_err[j] += ((s_old - (s_new - v)) + (p - v)) + p_err
            g_sum[j] = s_new
    return r_hi, r_lo, g_sum, g_err


@kernel(cache=True, nogil=True)
def _sum_of_squares(r_hi, r_lo, w, has_w):  # pragma: no cover
    s = 0.0
    e = 0.0
    for i in range(r_hi.size):
        r, r_tail = r_hi[i], r_lo[i]
        a, a_tail = (r, r_tail) if not has_w else _times(r, r_tail, w[i])
        p = a * r
        p_err = _fma(a, r, -p) + a * r_tail + a_tail * r
        t = s + p
        v = t - s
        e += ((s - (t - v)) + (p - v)) + p_err
        s = t
    return s + e


def sum_of_squares(r_hi: np.ndarray, r_lo: np.ndarray, weights: np.ndarray | None) -> float:
    """Σ w_i (r_hi + r_lo)², rounded once: ‖r‖² to the last bit, which R² = 1 - ‖r‖²/SST
    needs when the fit explains little (NIST's Wampler5: R² ≈ 0.002)."""
    w = np.zeros(1) if weights is None else np.ascontiguousarray(weights, dtype=np.float64)
    return float(_sum_of_squares(r_hi, r_lo, w, weights is not None))


def residual_gradient(
    Z_hi: np.ndarray,
    Z_lo: np.ndarray | None,
    y: np.ndarray,
    b_hi: np.ndarray,
    b_lo: np.ndarray,
    c_hi: float,
    c_lo: float,
    weights: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """r = y - c - Z b and g = Zᵀ r (Zᵀ W r with weights), in double-double, Z of shape (n, k).

    Returns (r_hi, r_lo, g_hi, g_lo), r unweighted; the pair sums are not renormalized
    beyond what double-double accuracy needs.
    """
    Z_hi = np.ascontiguousarray(Z_hi, dtype=np.float64)
    lo = np.zeros((1, 1)) if Z_lo is None else np.ascontiguousarray(Z_lo, dtype=np.float64)
    w = np.zeros(1) if weights is None else np.ascontiguousarray(weights, dtype=np.float64)
    return _residual_gradient(
        Z_hi,
        lo,
        Z_lo is not None,
        np.ascontiguousarray(y, dtype=np.float64),
        np.ascontiguousarray(b_hi, dtype=np.float64),
        np.ascontiguousarray(b_lo, dtype=np.float64),
        float(c_hi),
        float(c_lo),
        w,
        weights is not None,
    )


@kernel(cache=True, nogil=True)
def _group_scores(Z_hi, Z_lo, has_lo, e_hi, e_lo, codes, n_groups):  # pragma: no cover
    n, k = Z_hi.shape
    s = np.zeros((n_groups, k + 1))
    err = np.zeros((n_groups, k + 1))
    for i in range(n):
        c = codes[i]
        r = e_hi[i]
        r_tail = e_lo[i]
        s_old = s[c, 0]
        s_new = s_old + r
        v = s_new - s_old
        err[c, 0] += ((s_old - (s_new - v)) + (r - v)) + r_tail
        s[c, 0] = s_new
        for j in range(k):
            a = Z_hi[i, j]
            p = a * r
            p_err = _fma(a, r_tail, _fma(a, r, -p))
            if has_lo:
                p_err += Z_lo[i, j] * r
            s_old = s[c, j + 1]
            s_new = s_old + p
            v = s_new - s_old
            err[c, j + 1] += ((s_old - (s_new - v)) + (p - v)) + p_err
            s[c, j + 1] = s_new
    return s, err


def group_scores(
    Z_hi: np.ndarray,
    Z_lo: np.ndarray | None,
    e_hi: np.ndarray,
    e_lo: np.ndarray,
    codes: np.ndarray,
    n_groups: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per group g, ``Σ_{i in g} e_i·[1, z_i]`` in double-double: shape (n_groups, k + 1).

    ``codes`` numbers each row's group 0..n_groups-1; with ``e`` the (weighted) residuals
    these are the groups' scores, whose outer products are the cluster-robust "meat".
    """
    lo = np.zeros((1, 1)) if Z_lo is None else np.ascontiguousarray(Z_lo, dtype=np.float64)
    return _group_scores(
        np.ascontiguousarray(Z_hi, dtype=np.float64),
        lo,
        Z_lo is not None,
        np.ascontiguousarray(e_hi, dtype=np.float64),
        np.ascontiguousarray(e_lo, dtype=np.float64),
        np.ascontiguousarray(codes, dtype=np.int64),
        int(n_groups),
    )


@kernel(cache=True, nogil=True)
def _segment_sums(hi, lo, starts):  # pragma: no cover
    m = starts.size - 1
    k = hi.shape[1]
    s = np.zeros((m, k))
    err = np.zeros((m, k))
    for g in range(m):
        for i in range(starts[g], starts[g + 1]):
            for j in range(k):
                t = hi[i, j]
                s_old = s[g, j]
                s_new = s_old + t
                v = s_new - s_old
                err[g, j] += ((s_old - (s_new - v)) + (t - v)) + lo[i, j]
                s[g, j] = s_new
    return s, err


def segment_sums(
    hi: np.ndarray, lo: np.ndarray, starts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Double-double sums of the rows ``starts[g]:starts[g+1]`` of ``hi + lo`` for each g."""
    return _segment_sums(
        np.ascontiguousarray(hi, dtype=np.float64),
        np.ascontiguousarray(lo, dtype=np.float64),
        np.ascontiguousarray(starts, dtype=np.int64),
    )
