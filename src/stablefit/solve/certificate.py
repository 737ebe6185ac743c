"""How far the returned coefficients can be trusted, stated conservatively."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MAX_DIGITS = 15


@dataclass(frozen=True)
class Certificate:
    """Accuracy statement of a least-squares fit.

    Attributes
    ----------
    condition_number : float
        2-norm condition number of the design after centering and equilibration, the
        one that governs the accuracy of the solve.
    condition_number_raw : float
        Condition number of ``[1, X]`` (or ``X``) as given, for comparison with tools that
        do not center or scale.
    backward_error : float
        Bound on ‖Ãᵀr‖ / (‖Ã‖_F ‖r‖) at the returned solution: how far it is from
        satisfying the normal equations of the scaled design exactly (0 for an exact fit).
    digits : int
        Significant decimal digits that every reported coefficient (and the intercept)
        carries for the data as given, never overstated; at most 15.
    digits_per_coef : tuple[int, ...]
        The same per coefficient (intercept first when there is one). Each is bounded on
        its own, through that coefficient's sensitivity to the error left in the scaled
        coordinates (:mod:`stablefit.solve.accuracy`): a dominant intercept or column
        cannot hide another coefficient's error. The bound covers what refinement left
        and the rounding of its double-double residuals, which columns far from zero
        (an offset many times their spread) make larger.
    refinement_steps : int
        Passes of iterative refinement performed.
    converged : bool
        Whether refinement went on until no coefficient could change any more (or what is
        left is below the rounding of a pass).
    error_bounds : tuple[float, ...]
        Bound on each coefficient's absolute error, in the order of ``digits_per_coef``
        (NaN for a feature left out of the fit).
    zeros : tuple[int, ...]
        Positions (as in ``digits_per_coef``) of the coefficients that cannot be told from
        zero: each lies within its error bound of 0, typically rounding noise where the
        true value is 0. None of their digits is significant, but their size is bounded.
    """

    condition_number: float
    condition_number_raw: float
    backward_error: float
    digits: int
    digits_per_coef: tuple[int, ...]
    refinement_steps: int
    converged: bool
    error_bounds: tuple[float, ...] = ()
    zeros: tuple[int, ...] = ()

    @property
    def digits_apart_from_zeros(self) -> int:
        """The digits every coefficient carries, leaving out those in ``zeros`` (and the
        features left out of the fit): what the fit's other coefficients can be trusted to.
        ``digits`` when no coefficient is a zero; 0 when every one is."""
        if not self.zeros:
            return self.digits
        others = [
            d
            for i, (d, bound) in enumerate(
                zip(self.digits_per_coef, self.error_bounds, strict=True)
            )
            if i not in self.zeros and not math.isnan(bound)
        ]
        return min(others) if others else 0

    def to_dict(self) -> dict:
        return {
            "condition_number": _finite_or_none(self.condition_number),
            "condition_number_raw": _finite_or_none(self.condition_number_raw),
            "backward_error": _finite_or_none(self.backward_error),
            "digits": self.digits,
            "digits_per_coef": list(self.digits_per_coef),
            "refinement_steps": self.refinement_steps,
            "converged": self.converged,
            "error_bounds": [_finite_or_none(bound) for bound in self.error_bounds],
            "zeros": list(self.zeros),
        }


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def trusted_digits(values: np.ndarray, error_bounds: np.ndarray) -> tuple[int, ...]:
    """Digits d such that the relative error is below 10**-d, counting the final rounding."""
    values = np.abs(np.asarray(values, dtype=float))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        relative = np.asarray(error_bounds) / values + 2.0**-53
        digits = np.floor(-np.log10(relative))
    digits = np.where(values == 0, 0, digits)
    return tuple(int(min(MAX_DIGITS, max(0, d))) for d in np.nan_to_num(digits, nan=0.0))
