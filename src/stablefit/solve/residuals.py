"""Residuals, leverage and Cook's distance of a sample of the fitted rows.

A fit of a large file keeps a few thousand of its rows, evenly spread
(:class:`~stablefit.summary.sample.RowSample`); their residuals are formed in
double-double as in refinement, and their leverage ``h = ‖R⁻ᵀ ã‖²`` from the triangular
factor of the scaled design, so an exact fit shows residuals at rounding level and an
ill-conditioned one no cancellation in ``h``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from stablefit.solve.design import ScaledDesign
from stablefit.solve.kernels import residual_gradient
from stablefit.solve.linalg import solve_triangular


class SampledRows(NamedTuple):
    """Raw rows of the design as the fit uses them, and their numbers for the user."""

    Z_hi: np.ndarray
    Z_lo: np.ndarray | None
    y: np.ndarray
    numbers: np.ndarray  # as the user numbers rows: file lines, or 0-based indices
    label: str  # "line" or "row"


@dataclass(frozen=True, eq=False)
class ResidualSample:
    """Fitted values, residuals and leverage of a sample of the rows a fit used.

    Attributes
    ----------
    rows : ndarray of int
        The rows as the user numbers them (``row_label`` says how).
    row_label : str
        "line" for a file's lines, "row" for 0-based indices.
    fitted, resid, leverage : ndarray
        ``ŷ``, ``y - ŷ`` and the diagonal of the hat matrix for those rows.
    n_params : int
        Parameters estimated (the intercept included).
    resid_std : float
        The fit's residual standard deviation σ (over all its rows).
    n_obs : int
        Rows in the fit; the sample holds ``len(rows)`` of them.
    """

    rows: np.ndarray
    row_label: str
    fitted: np.ndarray
    resid: np.ndarray
    leverage: np.ndarray
    n_params: int
    resid_std: float
    n_obs: int

    @property
    def standardized(self) -> np.ndarray:
        """Internally studentized residuals ``r / (σ √(1 - h))`` (NaN where undefined)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            values = self.resid / (self.resid_std * np.sqrt(1.0 - self.leverage))
        return np.where(np.isfinite(values), values, np.nan)

    @property
    def cooks_distance(self) -> np.ndarray:
        """Cook's distance ``t² h / (k (1 - h))`` with ``t`` the standardized residual."""
        with np.errstate(divide="ignore", invalid="ignore"):
            values = self.standardized**2 * self.leverage / (self.n_params * (1.0 - self.leverage))
        return np.where(np.isfinite(values), values, np.nan)


def residual_sample(
    design: ScaledDesign,
    R: np.ndarray,
    params_hi: np.ndarray,
    params_lo: np.ndarray,
    sampled: SampledRows,
    *,
    resid_std: float,
    n_obs: int,
) -> ResidualSample:
    """Residuals (double-double, rounded) and leverage of ``sampled`` rows at the final
    parameters (intercept first, in the data's units), for the design factored as R."""
    offset = int(design.intercept)
    c_hi, c_lo = (params_hi[0], params_lo[0]) if offset else (0.0, 0.0)
    r_hi, r_lo, *_ = residual_gradient(
        sampled.Z_hi, sampled.Z_lo, sampled.y, params_hi[offset:], params_lo[offset:], c_hi, c_lo
    )
    resid = r_hi + r_lo
    block = design.scaled(sampled.Z_hi, sampled.Z_lo, sampled.y)
    rows_of_A = block.hi if block.lo is None else block.hi + block.lo
    W = solve_triangular(R, rows_of_A.T, trans=True)
    return ResidualSample(
        rows=np.asarray(sampled.numbers, dtype=np.int64),
        row_label=sampled.label,
        fitted=sampled.y - resid,
        resid=resid,
        leverage=np.einsum("ij,ij->j", W, W),
        n_params=R.shape[1],
        resid_std=resid_std,
        n_obs=n_obs,
    )
