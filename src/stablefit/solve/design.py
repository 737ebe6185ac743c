"""The scaled design matrix the solver works on, built exactly in double-double.

For data columns Z (features, or powers of x held as double-double), the solver sees
``Ã = [1, (Z - shift) / scale]`` (without the leading ones when there is no intercept).
``scale`` is a power of two and the subtraction is error-free (``two_sum``), so Ã holds
the user's data exactly: refinement converges to the least-squares solution of the data
as given, not of a rounded copy. Centering removes the offset that makes ``[1, X]``
ill-conditioned (a timestamp column near 1.7e9), and scaling equilibrates the columns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from stablefit.solve.blocks import Blocks, RawBlock
from stablefit.solve.dd import dd_add, dd_mul, dd_sum, two_prod, two_sum

T = TypeVar("T")


class BeyondRange(ArithmeticError):
    """Slopes in the data's units beyond float64's range (a column near 1e-300 for a
    target near 1e15); ``columns`` are their indices among the design's columns."""

    def __init__(self, columns: np.ndarray) -> None:
        super().__init__(f"slopes of columns {columns.tolist()} beyond float64's range")
        self.columns = columns


@dataclass(frozen=True)
class DesignBlock:
    """Rows of Ã as ``hi + lo`` (lo may be None when exact in double) and their targets."""

    hi: np.ndarray
    lo: np.ndarray | None
    y: np.ndarray


def power_of_two_scale(spread: np.ndarray) -> np.ndarray:
    """The power of two nearest each positive spread (1 where the spread is 0 or not finite)."""
    safe = np.where(np.isfinite(spread) & (spread > 0), spread, 1.0)
    return np.exp2(np.round(np.log2(safe)))


@dataclass(frozen=True)
class ScaledDesign:
    """Serves passes of Ã built from raw blocks ``(Z_hi, Z_lo or None, y)``.

    ``blocks`` is None in a copy sent to where the data are read (see ``__reduce__``).
    """

    blocks: Blocks | None
    shift: np.ndarray
    scale: np.ndarray
    intercept: bool

    def __reduce__(self) -> tuple[Any, ...]:
        # A pass's per-block function, shipped to a cluster's workers, may refer to the
        # design: it travels with its scaling, not with the reference to the whole data.
        return (ScaledDesign, (None, self.shift, self.scale, self.intercept))

    @property
    def n_params(self) -> int:
        return self.shift.size + int(self.intercept)

    def map_reduce(
        self, function: Callable[[RawBlock], T], combine: Callable[[T, T], T], initial: T
    ) -> T:
        """One pass: ``function`` on each raw block, merged in order (see
        :mod:`stablefit.solve.blocks`)."""
        assert self.blocks is not None, "a design's copy on a worker has no data to read"
        return self.blocks.map_reduce(function, combine, initial)

    def scaled(self, Z_hi: np.ndarray, Z_lo: np.ndarray | None, y: np.ndarray) -> DesignBlock:
        """Rows of Ã from raw rows: exact centering (two_sum) and power-of-two scaling."""
        hi, lo = two_sum(Z_hi, -self.shift[None, :])
        if Z_lo is not None:
            hi, lo = two_sum(hi, lo + Z_lo)
        hi, lo = hi / self.scale, lo / self.scale
        exact = Z_lo is None and not np.any(lo)
        if self.intercept:
            ones = np.ones((hi.shape[0], 1))
            hi = np.hstack([ones, hi])
            lo = np.hstack([np.zeros_like(ones), lo])
        return DesignBlock(hi, None if exact else lo, y)

    def scaled_rounded(self, Z_hi: np.ndarray, Z_lo: np.ndarray | None) -> np.ndarray:
        """Rows of Ã rounded to double (the ``hi`` of :meth:`scaled`, up to the rounding of
        ``Z_lo``), in one new C-ordered array: what products with a preconditioner need,
        at a third of the cost."""
        offset = int(self.intercept)
        A = np.empty((Z_hi.shape[0], self.n_params))
        A[:, :offset] = 1.0
        np.subtract(Z_hi, self.shift, out=A[:, offset:])
        if Z_lo is not None:
            A[:, offset:] += Z_lo
        A[:, offset:] *= 1.0 / self.scale  # powers of two: exact
        return A

    def from_scaled(self, theta: np.ndarray) -> np.ndarray:
        """Parameters in the data's units (intercept first) from θ̃ of Ã."""
        return self.transform() @ theta

    def from_scaled_dd(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``from_scaled`` in double-double: the intercept's part ``-shift·θ̃/scale`` is
        where centering cancels (a timestamp column near 1.7e9, x⁵ of a polynomial on
        x = 1000…1020), so a correction to it is summed exactly, not rounded term by term.
        """
        offset = int(self.intercept)
        with np.errstate(over="ignore"):
            slopes = theta[offset:] / self.scale  # exact: the scales are powers of two
        beyond = np.isinf(slopes) & np.isfinite(theta[offset:])
        if beyond.any():
            raise BeyondRange(np.flatnonzero(beyond))
        if not self.intercept:
            return slopes, np.zeros_like(slopes)
        p_hi, p_lo = two_prod(-self.shift, slopes)
        s_hi, s_lo = dd_sum(np.append(p_hi, theta[0]), np.append(p_lo, 0.0), axis=0)
        return np.append(s_hi, slopes), np.append(s_lo, np.zeros_like(slopes))

    def to_scaled(self, params: np.ndarray) -> np.ndarray:
        """θ̃ of Ã from parameters in the data's units (intercept first)."""
        offset = int(self.intercept)
        theta = params * np.concatenate([np.ones(offset), self.scale])
        if self.intercept:
            theta[0] = params[0] + float(self.shift @ params[1:])
        return theta

    def scaled_gradient(self, g_hi: np.ndarray, g_lo: np.ndarray) -> np.ndarray:
        """Ãᵀr from Aᵀr (A = [1, Z] as given), as Tᵀ(Aᵀr) in double-double, rounded."""
        hi, lo = self.scaled_gradient_pair(g_hi, g_lo)
        return hi + lo

    def scaled_gradient_pair(
        self, g_hi: np.ndarray, g_lo: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Ãᵀr from Aᵀr (A = [1, Z] as given), as Tᵀ(Aᵀr), a double-double pair.

        Column j of Ã is (z_j - shift_j)/scale_j, so its product with r is
        (z_jᵀr - shift_j·1ᵀr)/scale_j: a cancellation that double-double resolves.
        The last axis holds the parameters, so a stack of gradients (one per cluster of
        rows, say) is transformed at once.
        """
        offset = int(self.intercept)
        hi, lo = g_hi[..., offset:], g_lo[..., offset:]
        if self.intercept:
            p_hi, p_lo = dd_mul(self.shift, np.zeros_like(self.shift), g_hi[..., :1], g_lo[..., :1])
            hi, lo = dd_add(hi, lo, -p_hi, -p_lo)
        first_hi, first_lo = two_sum(g_hi[..., :offset], g_lo[..., :offset])
        return (
            np.concatenate([first_hi, hi / self.scale], axis=-1),
            np.concatenate([first_lo, lo / self.scale], axis=-1),
        )

    def transform(self) -> np.ndarray:
        """T with θ_original = T θ̃ (original order: intercept first, then coefficients)."""
        k, offset = self.n_params, int(self.intercept)
        T = np.zeros((k, k))
        T[np.arange(offset, k), np.arange(offset, k)] = 1.0 / self.scale
        if self.intercept:
            T[0, 0] = 1.0
            T[0, 1:] = -self.shift / self.scale
        return T
