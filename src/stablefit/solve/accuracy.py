"""How far refinement can be trusted, per coefficient: contraction and rounding noise.

Errors are measured in the energy norm ‖R e‖ of the scaled coordinates θ̃ (e the error
of θ̃, ÃᵀÃ ≈ RᵀR). That norm is what refinement contracts, and it converts to a bound on
every single coefficient through the rows of R⁻¹:

    |e_i| ≤ ‖(R⁻¹)_i‖ · ‖R e‖,    |error of coefficient i| ≤ ‖(T R⁻¹)_i‖ · ‖R e‖

(T maps θ̃ to the data's units). ‖(T R⁻¹)_i‖ is σ-free standard error of coefficient i, so
a dominant intercept or column cannot hide another coefficient's error: each is held to
its own sensitivity. Two things limit ‖R e‖ after a step with correction δ:

- the contraction ρ of the iteration, ‖R e_next‖ ≤ ρ/(1-ρ) · ‖R δ‖ (Björck, *Numerical
  Methods for Least Squares Problems*, 1996, §2.9; Demmel et al., "Error bounds from
  extra-precise iterative refinement", ACM TOMS 32, 2006, for the stopping rule);
- the rounding noise of a pass, which no further pass removes: r = y - c - Z b is formed
  in double-double on the data as given, so its error is about u² times the sizes of the
  terms that cancel, |y| + |c| + |Z||b|: large where a column's offset dwarfs its spread.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from stablefit.solve.blocks import SUB_BLOCK_ROWS
from stablefit.solve.design import ScaledDesign
from stablefit.solve.linalg import solve_triangular

UNIT_ROUNDOFF = 2.0**-53
SMALLEST = 2.0**-1074


def condition_number(R: np.ndarray) -> float:
    """2-norm condition number of a triangular factor (inf when singular)."""
    singular = np.linalg.svd(R, compute_uv=False)
    with np.errstate(over="ignore"):  # beyond 1.8e308 it is inf, as for a singular one
        return float(singular[0] / singular[-1]) if singular[-1] > 0 else float("inf")


def qr_contraction_bound(R: np.ndarray) -> float:
    """Error reduction per refinement step, in the energy norm, with R from Householder QR.

    R is the exact factor of Ã + Δ with ‖Δ‖ ≲ k·u‖Ã‖ (the rounding of Ã to double, and
    Householder's backward error, Higham, *Accuracy and Stability of Numerical
    Algorithms*, Thm. 19.4); then ‖R⁻ᵀ(RᵀR - ÃᵀÃ)R⁻¹‖ ≤ 2‖Δ‖‖R⁻¹‖ ≈ 2k·κ·u. The
    rounding of the gradient to double adds u·κ. Factor 4 for the safe side.
    """
    k = R.shape[0]
    return 4.0 * (2 * k + 1) * condition_number(R) * UNIT_ROUNDOFF


def cholesky_contraction_bound(R: np.ndarray, offset_ratio: float, n_rows: int) -> float:
    """Error reduction per refinement step, in the energy norm, with R from the co-moments.

    That R is the factor of ÃᵀÃ + E, and ‖R⁻ᵀER⁻¹‖ ≤ κ²‖E‖/‖R‖². E has three parts: the
    Cholesky factorization's own, ‖E‖ ≲ k·u‖ÃᵀÃ‖ (Higham, Thm. 10.3); the co-moments'
    rounding; and the coupling of the ones column with columns centered at a rounded mean
    (ÃᵀÃ is block-diagonal only for the exact means). The last two grow with the offset
    ratio a = max |z| / scale of the columns (each merge of partial means rounds at
    u·max|z|, and there is one per 4096 rows or so): ‖E‖/‖R‖² ≲ u·(8k + 8k·a·(1 + n/4096)).
    """
    k = R.shape[0]
    pieces = 1.0 + n_rows / 4096.0
    relative = UNIT_ROUNDOFF * (8.0 * k + 8.0 * k * offset_ratio * pieces)
    return condition_number(R) ** 2 * relative


def safe_norm(values: np.ndarray, axis: int | None = None) -> np.ndarray:
    """2-norms that do not overflow or underflow in their squares (a column near 1e-281 has
    sensitivities near 1e281)."""
    values = np.asarray(values, dtype=float)
    largest = np.abs(values).max(axis=axis, keepdims=True, initial=0.0)
    safe = np.where(largest > 0, largest, 1.0)
    with np.errstate(invalid="ignore", over="ignore"):
        norms = np.squeeze(largest * np.linalg.norm(values / safe, axis=axis, keepdims=True))
    return norms


class Sensitivity:
    """Row norms of R⁻¹ and of T R⁻¹: what a unit of ‖R e‖ means for each θ̃_i and for
    each coefficient in the data's units (intercept first)."""

    def __init__(self, R: np.ndarray, design: ScaledDesign) -> None:
        k = R.shape[1]
        inverse = solve_triangular(R, np.eye(k))
        self.scaled = np.linalg.norm(inverse, axis=1)
        self.inverse_norm = float(np.linalg.norm(inverse, 2))
        self.original = safe_norm(design.transform() @ inverse, axis=1)
        # ‖ã_j‖ = ‖R e_j‖: the columns' lengths without another pass over the data.
        self.column_norms = np.linalg.norm(R, axis=0)


def update_rounding(
    design: ScaledDesign,
    R: np.ndarray,
    before: tuple[np.ndarray, np.ndarray],
    after: tuple[np.ndarray, np.ndarray],
    delta: np.ndarray,
) -> float:
    """‖R e‖ of what storing a step δ of θ̃ in the double-double parameters lost, measured
    exactly (rationals, k of them): zero when the sum is exact, δ itself when the step is
    below the parameters' last place and is lost whole."""
    applied = [
        Fraction(a_hi) + Fraction(a_lo) - Fraction(b_hi) - Fraction(b_lo)
        for a_hi, a_lo, b_hi, b_lo in zip(*after, *before, strict=True)
    ]
    offset = int(design.intercept)
    slopes = [
        Fraction(float(d)) / Fraction(float(s))
        for d, s in zip(delta[offset:], design.scale, strict=True)
    ]
    intended = slopes
    if design.intercept:
        shift = sum(Fraction(float(c)) * b for c, b in zip(design.shift, slopes, strict=True))
        intended = [Fraction(float(delta[0])) - shift, *slopes]
    lost = np.array([float(a - i) for a, i in zip(applied, intended, strict=True)])
    if not lost.any():
        return 0.0
    with np.errstate(over="ignore", invalid="ignore"):
        return float(safe_norm(R @ design.to_scaled(lost)))


def natural_sizes(
    design: ScaledDesign, sensitivity: Sensitivity, target_norm: float, n_rows: int
) -> np.ndarray:
    """‖y‖ / ‖A e_j‖ (at least): the size at which coefficient j would explain the whole
    target, against which one that is (nearly) zero is measured."""
    offset = int(design.intercept)
    lengths = np.abs(design.shift) * np.sqrt(float(n_rows))
    lengths = lengths + design.scale * sensitivity.column_norms[offset:]
    if design.intercept:
        lengths = np.append(np.sqrt(float(n_rows)), lengths)
    with np.errstate(divide="ignore", over="ignore"):
        return target_norm / lengths


def rounding_noise(
    design: ScaledDesign,
    sensitivity: Sensitivity,
    params: np.ndarray,
    *,
    n_rows: int,
    target_norm: float,
    residual_norm: float,
    largest_weight: float = 1.0,
    weighted_norms: tuple[float, float] | None = None,
) -> float:
    """Bound on ‖R e‖ for the error e that the rounding of one pass leaves in θ̃.

    Two sources, both of order u² = 2⁻¹⁰⁶ times the magnitudes that cancel:

    - the residual: each r_i carries an error below γ_r·u²·t_i with
      t_i = |y_i| + |c| + Σ_j |z_ij||b_j| (k products and sums, errors gathered in
      double), which moves θ̃ by R⁻¹Qᵀ of it: at most γ_r·u²·‖t‖ in the energy norm;
    - the gradient: z_jᵀr is summed over up to m = SUB_BLOCK_ROWS rows with its error
      terms gathered in double, an error η_j below γ_g·u²·‖z_j‖‖r‖, and its shift·1ᵀr
      part the same; in the energy norm ‖R⁻ᵀη‖ ≤ min(Σ_j ‖(R⁻¹)_j‖·|η_j|, ‖R⁻¹‖·‖η‖).
      The worst case of such a sum is γ_g ≈ m, reached only when every rounding error
      has the same sign; γ_g = 8(√m + 4) is the usual statistical estimate (Higham,
      *Accuracy and Stability of Numerical Algorithms*, §2.8: √m in place of m) with
      room to spare, and the tests check it against exact arithmetic.

    Where products fall below float64's normal range, each operation may also lose up to
    the smallest subnormal, 2⁻¹⁰⁷⁴: an absolute error that the division by a column's
    scale can make large.

    With weights W (R from W^½Ã), the residual's rounding moves θ̃ by R⁻¹QᵀW^½ε and the
    gradient's is that of ZᵀWr: ``residual_norm`` and ``target_norm`` are unweighted
    norms, and ``largest_weight`` multiplies what they bound. Given ``weighted_norms``,
    (‖W^½r‖, ‖W^½y‖), every norm is weighted instead and no factor of the weights is
    needed: ‖W^½ε‖ ≤ γ_r·u²·‖W^½t‖, and Σ_i |z_ij|w_i|r_i| ≤ ‖W^½z_j‖·‖W^½r‖ (R's columns
    are those of W^½Ã, ‖W^½1‖ its first). Far tighter when the weights span many decades
    and the heaviest rows are those the fit passes closest to: with the unweighted norms,
    weights up to 1e60 left no certified digit of coefficients correct to 16.

    ‖z_j‖ = ‖shift_j·1 + scale_j·ã_j‖ ≤ |shift_j|·√n + scale_j·‖ã_j‖, so nothing here
    needs another pass over the data.
    """
    k = params.size
    offset = int(design.intercept)
    root_n = np.sqrt(float(n_rows))
    # ‖1‖, or ‖W^½1‖ (without an intercept the shifts are 0 and it is not needed).
    ones_norm = root_n
    if weighted_norms is not None:
        residual_norm, target_norm = weighted_norms
        ones_norm = float(sensitivity.column_norms[0]) if offset else 0.0
    shift, scale = np.abs(design.shift), design.scale
    column_norms = shift * ones_norm + scale * sensitivity.column_norms[offset:]
    slopes = np.abs(params[offset:])
    intercept = abs(float(params[0])) if offset else 0.0
    terms = target_norm + ones_norm * intercept + float(column_norms @ slopes)
    residual_factor = 4.0 * (k + 4)
    gradient_factor = 8.0 * (np.sqrt(min(n_rows, SUB_BLOCK_ROWS)) + 4)
    gradient_error = UNIT_ROUNDOFF**2 * gradient_factor * (column_norms + shift * ones_norm)
    gradient_error = gradient_error * residual_norm / scale
    # Below float64's normal range the error-free transformations are not: every product
    # and sum may lose up to the smallest subnormal, SMALLEST (data near 1e-150 whose
    # residuals and products with the data fall there).
    lost = 3.0 * n_rows * SMALLEST * (1.0 + shift) / scale
    if design.intercept:
        intercept_error = UNIT_ROUNDOFF**2 * gradient_factor * ones_norm * residual_norm
        gradient_error = np.append(intercept_error, gradient_error)
        lost = np.append(n_rows * SMALLEST, lost)
    residual_error = UNIT_ROUNDOFF**2 * residual_factor * terms
    residual_lost = (3 * k + 4) * SMALLEST * root_n
    if weighted_norms is not None:
        # The subnormal losses are absolute: the weights scale the residuals' (each ε_i
        # weighs √w_i), not the sums'.
        return (
            residual_error
            + np.sqrt(largest_weight) * residual_lost
            + _moved(sensitivity, gradient_error + lost)
        )
    # Weights W enter as R⁻ᵀÃᵀWε = QᵀW^½ε and as ZᵀWr: √max w and max w.
    return np.sqrt(largest_weight) * (residual_error + residual_lost) + largest_weight * _moved(
        sensitivity, gradient_error + lost
    )


def _moved(sensitivity: Sensitivity, gradient_error: np.ndarray) -> float:
    """‖R⁻ᵀη‖ for a gradient error below ``gradient_error``, componentwise."""
    return min(
        float(sensitivity.scaled @ gradient_error),
        sensitivity.inverse_norm * float(safe_norm(gradient_error)),
    )
