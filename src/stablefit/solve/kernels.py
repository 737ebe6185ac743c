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
from typing import NamedTuple

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


# Rows whose residuals are formed together: one running sum per row in each lane of the
# processor's vector registers. (Fewer than about 16 and the compiler unrolls the rows
# instead of vectorizing them.)
TILE_ROWS = 32


@kernel(cache=True, nogil=True)
def _residual_gradient(Z_hi, Z_lo, has_lo, y, b_hi, b_lo, c_hi, c_lo, w, has_w):  # pragma: no cover
    n, k = Z_hi.shape
    r_hi = np.empty(n)
    r_lo = np.empty(n)
    g_sum = np.zeros(k)
    g_err = np.zeros(k)
    r_sum = r_err = square_sum = square_err = 0.0
    largest_residual = largest_target = target_squares = 0.0
    # A row's sum runs along four running sums over the four quarters of the row, as a
    # dependent chain of additions would leave the processor idle three cycles in four.
    # TILE_ROWS rows advance together, a row per vector lane: their columns are copied
    # into ``tile`` first, so that the lanes read consecutive values.
    q = k // 4
    width = min(TILE_ROWS, n)
    tile = np.zeros((k, width))
    tile_lo = np.zeros((k, width) if has_lo else (1, 1))
    s = np.empty((4, width))
    e = np.empty((4, width))
    for first in range(0, n, width):
        rows = min(width, n - first)
        for lane in range(rows):
            for j in range(k):
                tile[j, lane] = Z_hi[first + lane, j]
                if has_lo:
                    tile_lo[j, lane] = Z_lo[first + lane, j]
        for lane in range(width):
            # (s0, e0) accumulates y_i - c - Σ_j z_ij b_j exactly (to double-double).
            y_i = y[first + lane] if lane < rows else 0.0
            s0 = y_i - c_hi
            v = s0 - y_i
            e[0, lane] = (y_i - (s0 - v)) + (-c_hi - v) - c_lo
            s[0, lane] = s0
            for chain in range(1, 4):
                s[chain, lane] = 0.0
                e[chain, lane] = 0.0
        for j in range(k):
            # Chain c takes the columns c·q .. c·q + q - 1; chain 0 also the last k mod 4.
            chain = j // q if j < 4 * q else 0
            b, b_tail = b_hi[j], b_lo[j]
            for lane in range(width):
                a = tile[j, lane]
                p = a * b
                p_err = _fma(a, b_tail, _fma(a, b, -p))
                if has_lo:
                    p_err += tile_lo[j, lane] * b
                s_old = s[chain, lane]
                s_new = s_old - p
                v = s_new - s_old
                e[chain, lane] += ((s_old - (s_new - v)) + (-p - v)) - p_err
                s[chain, lane] = s_new
        for lane in range(rows):
            i = first + lane
            s0, e0 = _plus_pair(s[0, lane], e[0, lane], s[1, lane], e[1, lane])
            s2, e2 = _plus_pair(s[2, lane], e[2, lane], s[3, lane], e[3, lane])
            total, error = _plus_pair(s0, e0, s2, e2)
            r = total + error
            r_tail = error - (r - total)
            r_hi[i] = r
            r_lo[i] = r_tail
            largest_residual = max(largest_residual, abs(r))
            largest_target = max(largest_target, abs(y[i]))
            a, a_tail = (r, r_tail) if not has_w else _times(r, r_tail, w[i])
            target_squares += (y[i] * w[i] if has_w else y[i]) * y[i]
            # Σ w r² and Σ w r, each exactly to double-double.
            p = a * r
            p_err = _fma(a, r, -p) + a * r_tail + a_tail * r
            t = square_sum + p
            v = t - square_sum
            square_err += ((square_sum - (t - v)) + (p - v)) + p_err
            square_sum = t
            t = r_sum + a
            v = t - r_sum
            r_err += ((r_sum - (t - v)) + (a - v)) + a_tail
            r_sum = t
            # g += z_i w_i r_i, exactly to double-double; independent across j, so it
            # vectorizes.
            for j in range(k):
                z = Z_hi[i, j]
                p = z * a
                p_err = _fma(z, a_tail, _fma(z, a, -p))
                if has_lo:
                    p_err += Z_lo[i, j] * a
                s_old = g_sum[j]
                s_new = s_old + p
                v = s_new - s_old
                g_err[j] += ((s_old - (s_new - v)) + (p - v)) + p_err
                g_sum[j] = s_new
    # Σ w r (hi, lo), Σ w r² (rounded once), max |r|, max |y|, Σ w y².
    totals = np.array(
        [r_sum, r_err, square_sum + square_err, largest_residual, largest_target, target_squares]
    )
    return r_hi, r_lo, g_sum, g_err, totals


class PassTotals(NamedTuple):
    """What one block adds to a refinement pass: ``Σ w r`` as a double-double pair, ``Σ w r²``
    rounded once, ``max |r|``, ``max |y|`` and ``Σ w y²`` (w = 1 without weights)."""

    residual_sum: tuple[float, float]
    sum_of_squares: float
    largest_residual: float
    largest_target: float
    target_squares: float


def residual_gradient(
    Z_hi: np.ndarray,
    Z_lo: np.ndarray | None,
    y: np.ndarray,
    b_hi: np.ndarray,
    b_lo: np.ndarray,
    c_hi: float,
    c_lo: float,
    weights: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, PassTotals]:
    """r = y - c - Z b and g = Zᵀ W r (W = diag(weights), the identity without them), in
    double-double, Z of shape (n, k), and the block's :class:`PassTotals`.

    Returns (r_hi, r_lo, g_hi, g_lo, totals), r unweighted; the pair sums are not
    renormalized beyond what double-double accuracy needs. ``Σ w r²`` is exact to the last
    bit, which R² = 1 - ‖r‖²/SST needs when the fit explains little (NIST's Wampler5:
    R² ≈ 0.002).
    """
    Z_hi = np.ascontiguousarray(Z_hi, dtype=np.float64)
    lo = np.zeros((1, 1)) if Z_lo is None else np.ascontiguousarray(Z_lo, dtype=np.float64)
    w = np.zeros(1) if weights is None else np.ascontiguousarray(weights, dtype=np.float64)
    r_hi, r_lo, g_hi, g_lo, totals = _residual_gradient(
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
    sums = PassTotals((float(totals[0]), float(totals[1])), *(float(value) for value in totals[2:]))
    return r_hi, r_lo, g_hi, g_lo, sums


@kernel(cache=True, nogil=True)
def _scaled_columns(
    Z_hi, Z_lo, has_lo, shift, inverse_scale, offset, y, root_w, has_w, out
):  # pragma: no cover
    n, d = Z_hi.shape
    for first in range(0, n, TILE_ROWS):
        last = min(n, first + TILE_ROWS)
        # A few rows at a time, column by column: the rows stay in the first-level cache
        # while each column of ``out`` is written in order.
        for j in range(offset):
            for i in range(first, last):
                out[i, j] = root_w[i] if has_w else 1.0
        for j in range(d):
            for i in range(first, last):
                value = Z_hi[i, j] - shift[j]
                if has_lo:
                    value += Z_lo[i, j]
                value *= inverse_scale[j]
                out[i, offset + j] = value * root_w[i] if has_w else value
        for i in range(first, last):
            out[i, offset + d] = y[i] * root_w[i] if has_w else y[i]


def scaled_columns(
    Z_hi: np.ndarray,
    Z_lo: np.ndarray | None,
    y: np.ndarray,
    shift: np.ndarray,
    scale: np.ndarray,
    intercept: bool,
    weights: np.ndarray | None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """``W^½ [1, (Z - shift) / scale, y]`` rounded to double, in column-major order (what
    LAPACK factors): ``(Z_hi - shift) + Z_lo`` rounded, then scaled (powers of two: exact).
    Written into ``out`` when given (column-major, of that shape).
    """
    n, d = Z_hi.shape
    offset = int(intercept)
    if out is None:
        out = np.empty((n, offset + d + 1), order="F")
    root_w = np.zeros(1) if weights is None else np.sqrt(np.asarray(weights, dtype=np.float64))
    _scaled_columns(
        np.ascontiguousarray(Z_hi, dtype=np.float64),
        np.zeros((1, 1)) if Z_lo is None else np.ascontiguousarray(Z_lo, dtype=np.float64),
        Z_lo is not None,
        np.ascontiguousarray(shift, dtype=np.float64),
        1.0 / np.ascontiguousarray(scale, dtype=np.float64),
        offset,
        np.ascontiguousarray(y, dtype=np.float64),
        root_w,
        weights is not None,
        out,
    )
    return out


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
