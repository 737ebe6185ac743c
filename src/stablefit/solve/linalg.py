"""Triangular solves and distribution functions, without SciPy's import where it costs
more than the work.

Importing ``scipy.linalg`` or ``scipy.special`` costs a process 0.2 s or more (most of it
SciPy's array-API layer), more than a fit of a small file takes. The solver's triangular
factors of up to :data:`SMALL_ORDER` parameters are therefore solved by substitution in
NumPy (as backward stable as LAPACK's ``dtrtrs``; Higham, *Accuracy and Stability of
Numerical Algorithms*, Thm. 8.5), larger ones by SciPy's LAPACK wrapper; which one is
decided by the order alone, so a given problem is always solved the same way. Student's
t and the F distribution come from ``scipy.special``, imported when a probability is
first asked for one that is defined (a fit with no residual degree of freedom has none).
Everything else the solver needs from LAPACK, NumPy's ``linalg`` has.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

# Triangular factors of at most this order are solved in NumPy: a row's substitution
# costs a few microseconds of Python, far less than SciPy's import.
SMALL_ORDER = 64


def solve_triangular(R: np.ndarray, B: np.ndarray, *, trans: bool = False) -> np.ndarray:
    """R⁻¹B, or R⁻ᵀB with ``trans``, for an upper triangular R (k, k) and B (k,) or (k, m).

    Raises ``numpy.linalg.LinAlgError`` when a diagonal entry of R is zero.
    """
    k = R.shape[0]
    if k > SMALL_ORDER:
        import scipy.linalg

        return scipy.linalg.solve_triangular(R, B, trans="T" if trans else "N", check_finite=False)
    diagonal = np.diag(R)
    if not np.all(diagonal != 0):
        raise np.linalg.LinAlgError("singular triangular matrix: a zero on its diagonal")
    X = np.array(B, dtype=np.float64)  # a copy, solved in place row by row
    # Rᵀ is lower triangular: forward substitution on R's columns; R itself, backward.
    for i in range(k) if trans else reversed(range(k)):
        others = R[:i, i] @ X[:i] if trans else R[i, i + 1 :] @ X[i + 1 :]
        X[i] = (X[i] - others) / diagonal[i]
    return X


def cholesky_solve(R: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(RᵀR)⁻¹b for an upper triangular R."""
    return solve_triangular(R, solve_triangular(R, b, trans=True))


def special() -> ModuleType:
    """``scipy.special``, imported when first needed."""
    import scipy.special

    return scipy.special
