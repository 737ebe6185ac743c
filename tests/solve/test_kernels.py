"""The compiled double-double kernels against 60-digit arithmetic."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest

from stablefit.solve.kernels import residual_gradient


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("with_lo", [False, True])
@pytest.mark.parametrize("k", [3, 4, 11])  # the row's four running sums, and a remainder
def test_residual_and_gradient_are_exact_to_double_double(with_lo, k, weighted):
    mpmath.mp.dps = 60
    rng = np.random.default_rng(2)
    n = 75  # two tiles of rows and part of a third
    Z = rng.normal(size=(n, k)) * 1e3 + 1.7e9  # a large offset: heavy cancellation
    Z_lo = rng.normal(size=Z.shape) * 1e-8 if with_lo else None
    y = rng.normal(size=n)
    w = rng.uniform(0.1, 10.0, size=n) if weighted else None
    b_hi, c_hi = rng.normal(size=k), 3.3
    b_lo, c_lo = b_hi * 1e-17, 1e-16
    r_hi, r_lo, g_hi, g_lo, totals = residual_gradient(Z, Z_lo, y, b_hi, b_lo, c_hi, c_lo, w)

    def exact(value: float) -> mpmath.mpf:
        return mpmath.mpf(float(value))

    def z(i: int, j: int) -> mpmath.mpf:
        return exact(Z[i, j]) + (exact(Z_lo[i, j]) if with_lo else 0)

    def weight(i: int) -> mpmath.mpf:
        return exact(w[i]) if weighted else mpmath.mpf(1)

    for i in range(n):
        r = exact(y[i]) - exact(c_hi) - exact(c_lo)
        r -= mpmath.fsum(z(i, j) * (exact(b_hi[j]) + exact(b_lo[j])) for j in range(k))
        assert abs(exact(r_hi[i]) + exact(r_lo[i]) - r) <= 1e-30 * abs(r)
    residuals = [exact(r_hi[i]) + exact(r_lo[i]) for i in range(n)]
    for j in range(k):
        g = mpmath.fsum(z(i, j) * weight(i) * residuals[i] for i in range(n))
        assert abs(exact(g_hi[j]) + exact(g_lo[j]) - g) <= 1e-30 * abs(g)
    total = mpmath.fsum(weight(i) * residuals[i] for i in range(n))
    assert abs(exact(totals.residual_sum[0]) + exact(totals.residual_sum[1]) - total) <= (
        1e-30 * mpmath.fsum(abs(weight(i) * residuals[i]) for i in range(n))
    )
    squares = mpmath.fsum(weight(i) * residuals[i] ** 2 for i in range(n))
    assert totals.sum_of_squares == float(squares)  # rounded once
    assert totals.largest_residual == np.abs(r_hi).max()
    assert totals.largest_target == np.abs(y).max()
    target_squares = float(mpmath.fsum(weight(i) * exact(y[i]) ** 2 for i in range(n)))
    assert totals.target_squares == pytest.approx(target_squares, rel=1e-14)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("with_lo", [False, True])
def test_scaled_columns_are_the_rounded_design_in_lapack_order(with_lo, weighted):
    from stablefit.solve.design import ScaledDesign
    from stablefit.solve.kernels import scaled_columns

    rng = np.random.default_rng(5)
    Z = rng.normal(size=(70, 5)) * 1e3 + 1.7e9
    Z_lo = rng.normal(size=Z.shape) * 1e-8 if with_lo else None
    y = rng.normal(size=70)
    w = rng.uniform(0.1, 10.0, size=70) if weighted else None
    design = ScaledDesign(
        None, shift=Z.mean(axis=0), scale=np.exp2([3, 5, 7, 9, 11.0]), intercept=True
    )
    columns = scaled_columns(Z, Z_lo, y, design.shift, design.scale, True, w)
    assert columns.flags.f_contiguous and columns.shape == (70, 7)
    expected = np.column_stack([design.scaled_rounded(Z, Z_lo), y])
    if weighted:
        expected *= np.sqrt(w)[:, None]
    np.testing.assert_array_equal(columns, expected)
