"""Exact residuals and gradients for small problems, in integer arithmetic.

Every float64 is an integer times a power of two, and so are the parameters refinement
carries (double-double: two such numbers). The residual r = y - c - Z b and the gradient
Ãᵀr of the scaled design are then exact rationals with power-of-two denominators, which
Python's integers compute without any rounding: the only rounding left in a refinement
step is the gradient's, once, to double. With that, refinement converges to the
least-squares solution of the data as given to the last bit of every coefficient,
however far the columns lie from zero (where double-double residuals lose digits to
cancellation: an intercept extrapolated from x = 1000…1020 to x = 0).

It costs about a microsecond per value of the data, against nanoseconds for the
compiled double-double pass, so it is used for small problems only
(:data:`stablefit.solve.lstsq.EXACT_PASS_VALUES`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from stablefit.solve.blocks import RawBlock
from stablefit.solve.design import ScaledDesign


def dyadic(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Python integers m (an object array) and one exponent e with values == m·2^e."""
    mantissa, exponent = np.frexp(np.asarray(values, dtype=np.float64))
    integers = (mantissa * 2.0**53).astype(np.int64)  # exact: 53 bits
    exponent = exponent.astype(np.int64) - 53
    lowest = int(exponent.min(initial=0))
    return integers.astype(object) << (exponent - lowest).astype(object), lowest


def _sum(parts: list[tuple[np.ndarray, int]]) -> tuple[np.ndarray, int]:
    """Σ m·2^e of integer arrays (broadcast) as one integer array and one exponent."""
    lowest = min(e for _, e in parts)
    return sum(m << (e - lowest) for m, e in parts), lowest


def _fraction(integer: int, exponent: int) -> Fraction:
    return Fraction(integer << exponent) if exponent >= 0 else Fraction(integer, 1 << -exponent)


def _dd(hi: float, lo: float) -> tuple[np.ndarray, int]:
    return _sum([dyadic(np.array([hi])), dyadic(np.array([lo]))])


@dataclass
class ExactTotals:
    """What an exact pass adds up: ÃᵀWr, rᵀWr, rows and yᵀWy as exact rationals (W the
    weights, the identity without them), and a caller's statistic of the residuals."""

    gradient: list[Fraction]
    sse: Fraction
    n: int
    yy: Fraction
    statistics: Any = None

    def __add__(self, other: ExactTotals) -> ExactTotals:
        statistics = self.statistics
        if statistics is None:
            statistics = other.statistics
        elif other.statistics is not None:
            statistics = statistics + other.statistics
        return ExactTotals(
            [a + b for a, b in zip(self.gradient, other.gradient, strict=True)],
            self.sse + other.sse,
            self.n + other.n,
            self.yy + other.yy,
            statistics,
        )


@dataclass(frozen=True)
class ExactPass:
    """One exact pass at the parameters ``(hi, lo)`` (data units, intercept first): a
    picklable per-block function for :meth:`ScaledDesign.map_reduce`. ``statistic`` is
    given the residuals as double-double pairs, as the compiled pass gives them."""

    design: ScaledDesign
    params_hi: np.ndarray
    params_lo: np.ndarray
    statistic: Callable[[RawBlock, np.ndarray, np.ndarray], Any] | None = None

    def zero(self) -> ExactTotals:
        return ExactTotals([Fraction(0)] * self.params_hi.size, Fraction(0), 0, Fraction(0))

    def __call__(self, raw: RawBlock) -> ExactTotals:
        Z_hi, Z_lo, y = raw.Z_hi, raw.Z_lo, raw.y
        design, offset = self.design, int(self.design.intercept)
        columns = [
            _sum([dyadic(Z_hi[:, j])] + ([] if Z_lo is None else [dyadic(Z_lo[:, j])]))
            for j in range(Z_hi.shape[1])
        ]
        # r = y - c - Σ_j z_j b_j: each product of two integers, each sum aligned.
        target = dyadic(y)
        terms = [target]
        if offset:
            c, c_exp = _dd(self.params_hi[0], self.params_lo[0])
            terms.append((-c, c_exp))
        for j, (z, z_exp) in enumerate(columns):
            b, b_exp = _dd(self.params_hi[offset + j], self.params_lo[offset + j])
            terms.append((-(z * b), z_exp + b_exp))
        r, r_exp = _sum(terms)
        weighted, w_exp = (r, 0) if raw.weights is None else dyadic(raw.weights)
        if raw.weights is not None:
            weighted = weighted * r
        # Ã's columns are (z_j - shift_j) / scale_j, exact: the scales are powers of two.
        exponent = r_exp + w_exp
        gradient = [_fraction(int(weighted.sum()), exponent)] if offset else []
        for j, (z, z_exp) in enumerate(columns):
            shift, shift_exp = dyadic(design.shift[j : j + 1])
            centered, centered_exp = _sum([(z, z_exp), (-shift, shift_exp)])
            total = _fraction(int((centered * weighted).sum()), centered_exp + exponent)
            gradient.append(total / Fraction(float(design.scale[j])))
        y_int, y_exp = target
        yy = y_int * y_int if raw.weights is None else dyadic(raw.weights)[0] * y_int * y_int
        totals = ExactTotals(
            gradient,
            _fraction(int((weighted * r).sum()), exponent + r_exp),
            y.size,
            _fraction(int(yy.sum()), 2 * y_exp + w_exp),
        )
        if self.statistic is not None:
            exact = [_fraction(int(value), r_exp) for value in r]
            r_hi = np.array([float(value) for value in exact])
            r_lo = np.array(
                [float(value - Fraction(hi)) for value, hi in zip(exact, r_hi, strict=True)]
            )
            totals.statistics = self.statistic(raw, r_hi, r_lo)
        return totals


def exact_pass(
    design: ScaledDesign,
    params_hi: np.ndarray,
    params_lo: np.ndarray,
    statistic: Callable[[RawBlock, np.ndarray, np.ndarray], Any] | None = None,
) -> tuple[np.ndarray, ExactTotals]:
    """(ÃᵀWr rounded once to double, the exact totals) at the parameters (hi, lo)."""
    task = ExactPass(design, params_hi, params_lo, statistic)
    totals = design.map_reduce(task, ExactTotals.__add__, task.zero())
    return np.array([float(g) for g in totals.gradient]), totals
