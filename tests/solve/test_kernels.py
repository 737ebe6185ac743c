"""The compiled double-double kernels against 60-digit arithmetic."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest

from stablefit.solve.kernels import residual_gradient


@pytest.mark.parametrize("with_lo", [False, True])
@pytest.mark.parametrize("k", [3, 4, 11])  # the row's four running sums, and a remainder
def test_residual_and_gradient_are_exact_to_double_double(with_lo, k):
    mpmath.mp.dps = 60
    rng = np.random.default_rng(2)
    Z = rng.normal(size=(30, k)) * 1e3 + 1.7e9  # a large offset: heavy cancellation
    Z_lo = rng.normal(size=Z.shape) * 1e-8 if with_lo else None
    y = rng.normal(size=30)
    b_hi, c_hi = rng.normal(size=k), 3.3
    b_lo, c_lo = b_hi * 1e-17, 1e-16
    r_hi, r_lo, g_hi, g_lo = residual_gradient(Z, Z_lo, y, b_hi, b_lo, c_hi, c_lo)

    def exact(value: float) -> mpmath.mpf:
        return mpmath.mpf(float(value))

    def z(i: int, j: int) -> mpmath.mpf:
        return exact(Z[i, j]) + (exact(Z_lo[i, j]) if with_lo else 0)

    for i in range(30):
        r = exact(y[i]) - exact(c_hi) - exact(c_lo)
        r -= mpmath.fsum(z(i, j) * (exact(b_hi[j]) + exact(b_lo[j])) for j in range(k))
        assert abs(exact(r_hi[i]) + exact(r_lo[i]) - r) <= 1e-30 * abs(r)
    for j in range(k):
        g = mpmath.fsum(z(i, j) * (exact(r_hi[i]) + exact(r_lo[i])) for i in range(30))
        assert abs(exact(g_hi[j]) + exact(g_lo[j]) - g) <= 1e-30 * abs(g)
