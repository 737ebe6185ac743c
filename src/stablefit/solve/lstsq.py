"""Least squares by a triangular factor of Ã and iterative refinement in double-double.

The factor R (ÃᵀÃ = RᵀR) comes either from the co-moments already in the Summary (a
Cholesky factor: no extra pass, used only when Ã is so well conditioned that it is as
good a preconditioner as a QR factor and gives standard errors as accurate) or from a
Householder QR of Ã accumulated block by block (TSQR). Refinement then repeats, one pass
over the data each,

    r = y - Ã θ,   g = Ãᵀ r   (both in double-double),   θ += R⁻¹ R⁻ᵀ g,

the corrected semi-normal equations. With R from a backward-stable QR each step shrinks
the error by about κ(Ã)·u (u = 2⁻⁵³), and because r and g are formed in double-double the
iterates converge to the least-squares solution of the data as given, far beyond what a
single QR solve in double can reach (Björck, *Numerical Methods for Least Squares
Problems*, 1996, §2.9). Small problems form r and g exactly instead
(:mod:`stablefit.solve.rational`). How far each coefficient can be trusted after the last
step, and when to stop, is :mod:`stablefit.solve.accuracy`'s business.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stablefit.solve.accuracy import (
    UNIT_ROUNDOFF,
    Sensitivity,
    condition_number,
    natural_sizes,
    qr_contraction_bound,
    rounding_noise,
    update_rounding,
)
from stablefit.solve.blocks import RawBlock
from stablefit.solve.dd import (
    dd_add,
    dd_cholesky,
    dd_forward_solve,
    dd_gram,
    dd_mul,
    dd_sum,
)
from stablefit.solve.design import ScaledDesign
from stablefit.solve.kernels import residual_gradient, scaled_columns
from stablefit.solve.linalg import cholesky_solve, solve_triangular
from stablefit.solve.rational import exact_pass

# The factor from the co-moments carries the Gram matrix's rounding, so the covariance from
# it is accurate to about κ²·u where a QR factor's is to κ·u: beyond κ = 30 its standard
# errors would keep fewer than 13 digits (at κ = 6e3, 8 against statsmodels' 13), while a
# QR factor costs its pass but saves a refinement step.
CHOLESKY_CONDITION_LIMIT = 30.0
MAX_REFINEMENT_STEPS = 12
GRAM_REFINEMENT_CONDITION = 1e4
# The double-double Gram matrix costs about 30 n k² flops: worth it for standard errors of
# ill-conditioned problems of moderate size (all of NIST's), not for millions of rows.
GRAM_BUDGET = 5e7
# Sums of squares below this (2^-900) may have lost digits to underflow.
NORMAL_SQUARES = 2.0**-900
# Relative error of a double-double number (2u², with u = 2⁻⁵³).
DD_ROUNDOFF = 2.0**-105
# Problems up to this many values (rows × parameters) are refined with exact rational
# residuals (about a microsecond per value and pass; see stablefit.solve.rational).
EXACT_PASS_VALUES = 20_000
# Panel width of the blocked QR (LAPACK dtpqrt's NB).
QR_PANEL_COLUMNS = 16
# Blocks of at most this many values are factored by NumPy's LAPACK (dgeqrf), without
# SciPy's import.
SMALL_QR_VALUES = 1 << 15


def triangular_factor_qr(design: ScaledDesign) -> tuple[np.ndarray, np.ndarray | None]:
    """R of Ã by Householder QR, block by block (TSQR): memory O(k²), not O(n).

    The target rides along as one more column, so the same factorization gives Qᵀy and
    with it the QR solution θ̃ = R⁻¹Qᵀy: backward stable, a far better start for
    refinement than the semi-normal equations. Each block's factor is computed on its
    own (in parallel, where the block is read), then stacked pairs of triangles are
    reduced by one more QR, as in a TSQR tree. Returns (R, θ̃), θ̃ None when R is singular.
    """
    k = design.n_params

    def block_factor(raw: RawBlock) -> np.ndarray:
        # LAPACK's own layout (column-major). R of W^½Ã: rounding √w only perturbs the
        # preconditioner. dtpqrt factors [R; B] for a triangle R (here zero) over a block
        # B: about 4.1 times the block's BᵀB on these tall, narrow blocks, where dgeqrt
        # takes 4.6 and dgeqrf a third more.
        rows = raw.Z_hi.shape[0]
        buffer = None if rows * (k + 1) <= SMALL_QR_VALUES else _block_buffer(rows, k + 1)
        augmented = scaled_columns(
            raw.Z_hi,
            raw.Z_lo,
            raw.y,
            design.shift,
            design.scale,
            design.intercept,
            raw.weights,
            out=buffer,
        )
        if augmented.size <= SMALL_QR_VALUES:
            return np.linalg.qr(augmented, mode="r")
        import scipy.linalg.lapack

        panel = min(QR_PANEL_COLUMNS, k + 1)
        triangle = np.zeros((k + 1, k + 1), order="F")
        factor, _, _, info = scipy.linalg.lapack.dtpqrt(
            0, panel, triangle, augmented, overwrite_a=True, overwrite_b=True
        )
        if info:
            raise RuntimeError(f"LAPACK dtpqrt failed (info={info})")
        return np.triu(factor)

    try:
        factor = design.map_reduce(block_factor, _stacked_factor, np.zeros((0, k + 1)))
    finally:
        _block_buffers.__dict__.clear()
    factor = _positive_diagonal(factor, k + 1)
    R, qty = factor[:k, :k], factor[:k, k]
    if not np.all(np.abs(np.diag(R)) > 0):
        return R, None
    return R, solve_triangular(R, qty)


# Each thread's block of the scaled design in LAPACK's layout, reused from block to block:
# a new one for each block cost the QR pass a sixth of its time (first touches of memory).
_block_buffers = threading.local()


def _block_buffer(rows: int, columns: int) -> np.ndarray:
    """This thread's column-major buffer of this shape (overwritten by each block)."""
    buffer = getattr(_block_buffers, "array", None)
    if buffer is None or buffer.shape != (rows, columns):
        buffer = _block_buffers.array = np.empty((rows, columns), order="F")
    return buffer


def _stacked_factor(upper: np.ndarray, lower: np.ndarray) -> np.ndarray:
    """The triangular factor of two factors stacked: one TSQR merge."""
    stacked = np.vstack([upper, lower])
    return np.linalg.qr(stacked, mode="r")[: upper.shape[1]]


def triangular_factor_from_comoments(n: int, scaled_comoment: np.ndarray) -> np.ndarray | None:
    """R of Ã = [1, (Z - mean) / scale] from the centered co-moments of Z (already divided
    by the scales): the ones column is orthogonal to the centered ones, hence R's √n.

    Returns None when the Cholesky factor is not accurate enough to precondition or to
    give the standard errors: its error grows like κ(Ã)², against κ(Ã) for QR.
    """
    try:
        R = np.linalg.cholesky(scaled_comoment).T
    except np.linalg.LinAlgError:
        return None
    if not np.all(np.isfinite(R)) or condition_number(R) > CHOLESKY_CONDITION_LIMIT:
        return None
    k = R.shape[0] + 1
    factor = np.zeros((k, k))
    factor[0, 0] = np.sqrt(float(n))
    factor[1:, 1:] = R
    return factor


def _positive_diagonal(R: np.ndarray, k: int) -> np.ndarray:
    if R.shape[0] < k:
        R = np.vstack([R, np.zeros((k - R.shape[0], k))])
    signs = np.where(np.diag(R) < 0, -1.0, 1.0)
    return R * signs[:, None]


def dependent_columns(R: np.ndarray, *, tolerance: float) -> list[int]:
    """Columns whose part outside the span of the columns before them is below tolerance.

    ``|R[k, k]|`` is the length of column k after projecting out columns 0..k-1, and
    ``‖R[:, k]‖`` its full length; their ratio is the sine of the angle between column k
    and that span.
    """
    lengths = np.linalg.norm(R, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        sines = np.abs(np.diag(R)) / lengths
    return [k for k in range(R.shape[1]) if not sines[k] > tolerance]


@dataclass
class Refinement:
    """The outcome of refinement: parameters in the data's units (intercept first) as
    double-double, and per parameter a bound on its error (same units).

    ``corrections`` are the steps' sizes ‖R δ‖ (energy norm of the scaled coordinates),
    ``energy_error`` a bound on ‖R e‖ for the error e of the returned θ̃;
    ``noise_bound`` is the part of ``error_bound`` that more passes cannot remove (the
    rounding of double-double residuals, :func:`~stablefit.solve.accuracy.rounding_noise`).
    """

    params_hi: np.ndarray
    params_lo: np.ndarray
    sse: float
    n_obs: int
    steps: int
    error_bound: np.ndarray
    noise_bound: np.ndarray
    energy_error: float = float("inf")
    corrections: list[float] = field(default_factory=list)
    design_norm: float = float("nan")
    residual_norm: float = float("nan")
    target_norm: float = float("nan")
    contraction_bound: float = 1.0
    converged: bool = False
    gram: tuple[np.ndarray, np.ndarray] | None = None
    statistics: Any = None

    @property
    def contraction(self) -> float:
        """Error reduction per step: the a-priori bound, or the ratio of the last two
        corrections when that is larger."""
        c = self.corrections
        observed = c[-1] / c[-2] if len(c) >= 2 and c[-2] > 0 else 0.0
        return max(self.contraction_bound, observed)


# Per block of a pass, a statistic of the rows and their residuals (r_hi + r_lo, before
# weighting) that adds up over blocks: its ``add(other)`` merges another block's value.
BlockStatistic = Callable[[RawBlock, np.ndarray, np.ndarray], Any]


@dataclass
class _PassTotals:
    """What one pass adds up: g = ÃᵀWr in double-double, rᵀWr, rows, yᵀWy, optionally
    ÃᵀWÃ and a caller's statistic (W the weights, the identity without them).

    Totals of blocks (and of a cluster's partitions) add with ``+``, which makes a new one.
    """

    g_hi: np.ndarray
    g_lo: np.ndarray
    sse: float
    n: int
    yy: float
    gram: tuple[np.ndarray, np.ndarray] | None
    statistics: Any = None
    # max |r|, max |y| and max w: bounds on ‖r‖/√n and ‖y‖/√n where their squares
    # underflow, and on what the weights multiply the rounding by.
    largest_residual: float = 0.0
    largest_target: float = 0.0
    largest_weight: float = 1.0
    weighted: bool = False

    def __add__(self, other: _PassTotals) -> _PassTotals:
        gram = None
        if self.gram is not None and other.gram is not None:
            gram = dd_add(*self.gram, *other.gram)
        statistics = self.statistics
        if statistics is None:
            statistics = other.statistics
        elif other.statistics is not None:
            statistics = statistics + other.statistics
        return _PassTotals(
            *dd_add(self.g_hi, self.g_lo, other.g_hi, other.g_lo),
            self.sse + other.sse,
            self.n + other.n,
            self.yy + other.yy,
            gram,
            statistics,
            max(self.largest_residual, other.largest_residual),
            max(self.largest_target, other.largest_target),
            max(self.largest_weight, other.largest_weight),
            self.weighted or other.weighted,
        )

    def norms(self) -> tuple[float, float]:
        """Upper bounds on ‖r‖ and ‖y‖ (unweighted), also where their squares underflow."""
        root_n = np.sqrt(float(self.n))
        residual, target = root_n * self.largest_residual, root_n * self.largest_target
        if self.largest_weight == 1.0 and self.sse >= NORMAL_SQUARES:
            residual = np.sqrt(self.sse)
        if self.largest_weight == 1.0 and self.yy >= NORMAL_SQUARES:
            target = np.sqrt(self.yy)
        return float(residual), float(target)

    def weighted_norms(self) -> tuple[float, float] | None:
        """(‖W^½r‖, ‖W^½y‖) of a weighted pass, None without weights or where their squares
        are below float64's normal range."""
        if not self.weighted or min(self.sse, self.yy) < NORMAL_SQUARES:
            return None
        return float(np.sqrt(self.sse)), float(np.sqrt(self.yy))


def _pass(
    design: ScaledDesign,
    params_hi: np.ndarray,
    params_lo: np.ndarray,
    want_gram: bool,
    statistic: BlockStatistic | None = None,
) -> _PassTotals:
    """One pass over the raw data at the original parameters (intercept first).

    The residual and ZᵀWr are formed in double-double on the data as given; the gradient
    in the coordinates of Ã follows exactly from them (``design.scaled_gradient``), so
    the data need no centering or scaling on this path.
    """
    k = params_hi.size
    offset = int(design.intercept)
    c_hi, c_lo = (params_hi[0], params_lo[0]) if offset else (0.0, 0.0)
    b_hi, b_lo = params_hi[offset:], params_lo[offset:]

    def block_totals(raw: RawBlock) -> _PassTotals:
        Z_hi, Z_lo, y, w = raw.Z_hi, raw.Z_lo, raw.y, raw.weights
        r_hi, r_lo, g_hi, g_lo, sums = residual_gradient(Z_hi, Z_lo, y, b_hi, b_lo, c_hi, c_lo, w)
        if offset:
            g_hi = np.append(sums.residual_sum[0], g_hi)
            g_lo = np.append(sums.residual_sum[1], g_lo)
        gram = None
        if want_gram:
            block = design.scaled(Z_hi, Z_lo, y)
            gram = dd_gram(block.hi, block.lo, w)
        part = _PassTotals(
            g_hi,
            g_lo,
            sums.sum_of_squares,
            y.size,
            sums.target_squares,
            gram,
            largest_residual=sums.largest_residual,
            largest_target=sums.largest_target,
            largest_weight=1.0 if w is None else float(w.max(initial=0.0)),
            weighted=w is not None,
        )
        if statistic is not None:
            part.statistics = statistic(raw, r_hi, r_lo)
        return part

    zero = _PassTotals(
        np.zeros(k),
        np.zeros(k),
        0.0,
        0,
        0.0,
        (np.zeros((k, k)), np.zeros((k, k))) if want_gram else None,
    )
    return design.map_reduce(block_totals, _PassTotals.__add__, zero)


def refine(
    design: ScaledDesign,
    R: np.ndarray,
    *,
    want_gram: bool = False,
    start: np.ndarray | None = None,
    contraction_bound: float | None = None,
    exact: bool = False,
    max_steps: int = MAX_REFINEMENT_STEPS,
    statistic: BlockStatistic | None = None,
) -> Refinement:
    """Iterate θ̃ += R⁻¹R⁻ᵀ ÃᵀW(y - Ãθ̃) until no coefficient can change any more.

    ``start`` is a first solution θ̃ when one is known without a pass (from the co-moments);
    ``contraction_bound`` an a-priori bound on the error reduction per step in the energy
    norm (:mod:`stablefit.solve.accuracy`; by default the one of a QR factor). With
    ``exact``, residuals and gradients are exact rationals (:mod:`stablefit.solve.rational`,
    for small problems) instead of double-double, and no rounding noise is left.

    Refinement stops when, for every coefficient on its own, what is left (by the
    contraction) is below a quarter of a unit in its last place and the last step left the
    sum of squares its digits (:func:`_sse_settled`); when the corrections
    stop shrinking; or after ``max_steps`` passes. ``statistic`` is gathered in every
    pass, from that pass's residuals; the last pass's total (residuals of the final
    iterate but one, which differ from the final ones by less than the certified digits)
    is ``Refinement.statistics``.
    """
    k = R.shape[1]
    sensitivity = Sensitivity(R, design)
    if start is None:
        params_hi, params_lo = np.zeros(k), np.zeros(k)
    else:
        params_hi, params_lo = design.from_scaled_dd(start)
    result = Refinement(
        params_hi, params_lo, float("nan"), 0, 0, np.full(k, np.inf), np.full(k, np.inf)
    )
    result.contraction_bound = (
        qr_contraction_bound(R) if contraction_bound is None else contraction_bound
    )
    # ÃᵀÃ = RᵀR, so ‖Ã‖_F = ‖R‖_F without another sum over the data.
    result.design_norm = float(np.linalg.norm(R))
    natural = np.zeros(k)
    for step in range(1, max_steps + 1):
        if exact and not (want_gram and result.gram is None):
            g, exact_totals = exact_pass(design, params_hi, params_lo, statistic)
            sse, n, yy = float(exact_totals.sse), exact_totals.n, float(exact_totals.yy)
            result.statistics = exact_totals.statistics
            noise = 0.0  # but for the parameters' rounding, below
        else:
            want = want_gram and result.gram is None
            totals = _pass(design, params_hi, params_lo, want, statistic)
            result.statistics = totals.statistics
            g = design.scaled_gradient(totals.g_hi, totals.g_lo)
            sse, n, yy = totals.sse, totals.n, totals.yy
            result.gram = result.gram or totals.gram
            residual_norm, target_norm = totals.norms()
            noise = rounding_noise(
                design,
                sensitivity,
                params_hi,
                n_rows=n,
                target_norm=target_norm,
                residual_norm=residual_norm,
                largest_weight=totals.largest_weight,
                weighted_norms=totals.weighted_norms(),
            )
        delta = _solve_normal(R, g)
        before = params_hi, params_lo
        params_hi, params_lo = dd_add(params_hi, params_lo, *design.from_scaled_dd(delta))
        noise += update_rounding(design, R, before, (params_hi, params_lo), delta)
        result.params_hi, result.params_lo = params_hi, params_lo
        correction = float(np.linalg.norm(R @ delta))
        result.corrections.append(correction)
        # The pass measured r at the previous θ̃; at θ̃ + δ it is r - Ãδ, and since
        # RᵀRδ = Ãᵀr, ‖r - Ãδ‖² = ‖r‖² - ‖Rδ‖² (what an exact fit's last step removes).
        result.sse = max(sse - correction**2, 0.0)
        result.residual_norm = float(np.sqrt(result.sse))
        result.n_obs, result.steps, result.target_norm = n, step, float(np.sqrt(yy))
        natural = natural_sizes(design, sensitivity, result.target_norm, n)
        remaining = _remaining(correction, result.contraction, noise)
        result.energy_error = remaining + noise
        with np.errstate(invalid="ignore", over="ignore"):
            noise_bound = sensitivity.original * noise + DD_ROUNDOFF * np.abs(params_hi)
            left = sensitivity.original * remaining
        # inf·0 (a sensitivity beyond float64, no error): nothing can be vouched for.
        result.noise_bound = np.nan_to_num(noise_bound, nan=np.inf)
        left = np.nan_to_num(left, nan=np.inf)
        result.error_bound = left + result.noise_bound
        # Below a quarter of a unit in the last place another pass could not change the
        # answer; below the noise bound it cannot be trusted to improve it, but the bound
        # is pessimistic: refinement goes on while the corrections keep shrinking. A
        # coefficient that is (nearly) zero is held to a quarter unit of its natural size.
        size = np.maximum(np.abs(params_hi), UNIT_ROUNDOFF * natural)
        finished = bool(np.all(left <= 2.0**-55 * size))
        result.converged = finished or bool(np.all(left <= result.noise_bound))
        shrinking = step == 1 or correction <= 0.5 * result.corrections[-2]
        if (finished and _sse_settled(result)) or not shrinking:
            break
    return result


# The sum of squares after a step is the pass's minus the step's ‖Rδ‖²; that difference
# keeps its digits while the step's share is below this (a step that removes most of the
# sum, as near an exact fit, leaves it to the rounding of ‖Rδ‖²: 5 digits of 15 were lost).
SETTLED_SHARE = 2.0**-20


def _sse_settled(result: Refinement) -> bool:
    """Whether the last step's correction is small beside the sum of squares it leaves
    (or that sum is rounding noise of the target): a pass at the new iterate would not
    change its digits."""
    correction = result.corrections[-1]
    return (
        correction**2 <= SETTLED_SHARE * result.sse
        or result.residual_norm <= UNIT_ROUNDOFF * result.target_norm
    )


def _remaining(correction: float, contraction: float, noise: float) -> float:
    """Bound on ‖R e‖ after a step of size ``correction`` (energy norm), beyond the noise.

    While the iteration contracts, what is left is at most ρ/(1-ρ) times the step. A step
    no larger than the rounding noise is itself noise: the error is about its size.
    Otherwise, a step that did not shrink says nothing about the error: unbounded.
    """
    if correction == 0.0:
        return 0.0
    if contraction < 1.0:
        return contraction / (1.0 - contraction) * correction
    return correction if correction <= 4.0 * noise else np.inf


def statistics_pass(
    design: ScaledDesign,
    params_hi: np.ndarray,
    params_lo: np.ndarray,
    statistic: BlockStatistic,
) -> Any:
    """One pass at the given parameters (no refinement step), for ``statistic`` alone: what
    a covariance asked for after the fit needs."""
    return _pass(design, params_hi, params_lo, False, statistic).statistics


def _solve_normal(R: np.ndarray, g: np.ndarray) -> np.ndarray:
    return cholesky_solve(R, g)


def unscaled_covariance(
    R: np.ndarray, gram: tuple[np.ndarray, np.ndarray] | None, T: np.ndarray
) -> np.ndarray:
    """T (ÃᵀÃ)⁻¹ Tᵀ: the covariance of the original coefficients divided by σ².

    From R alone the result is accurate to about κ(Ã)·u relative. Given the Gram matrix
    in double-double, a double-double Cholesky factor L of it gives W = L⁻¹Tᵀ and WᵀW
    accurate to about κ(Ã)²·u², which is what NIST's hardest problems need (Filip:
    κ(Ã) ≈ 4e9 leaves 6 digits from R and about 14 from the Gram).
    """
    if gram is None:
        W = solve_triangular(R, T.T, trans=True)
        return W.T @ W
    L_hi, L_lo = dd_cholesky(*gram)
    W_hi, W_lo = dd_forward_solve(L_hi, L_lo, T.T.copy(), np.zeros_like(T.T))
    p_hi, p_lo = dd_mul(W_hi[:, :, None], W_lo[:, :, None], W_hi[:, None, :], W_lo[:, None, :])
    cov_hi, cov_lo = dd_sum(p_hi, p_lo, axis=0)
    return cov_hi + cov_lo
