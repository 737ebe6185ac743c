"""Centered cross-products of the complete rows, mergeable.

Each block is centered at its own mean before its cross-product is formed, and blocks are
combined with the pairwise update of Chan, Golub and LeVeque (1979), so that a column's
offset (a timestamp near 1.7e9, say) never cancels away the digits of its spread.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class CoMoments:
    """``n`` complete rows, their ``mean`` (p,) and ``comoment`` sum (z - mean)(z - mean)ᵀ.

    Without ``cross_products`` only the diagonal was formed (each column's own sum of
    squares about its mean); the off-diagonal entries are zero, not measured.
    """

    n: int
    mean: np.ndarray
    comoment: np.ndarray
    cross_products: bool = True

    @classmethod
    def empty(cls, p: int) -> CoMoments:
        return cls(0, np.zeros(p), np.zeros((p, p)))

    @classmethod
    def of_block(cls, Z: np.ndarray) -> CoMoments:
        """Co-moments of the rows of ``Z`` (rows, p); every value must be finite."""
        n = Z.shape[0]
        if n == 0:
            return cls.empty(Z.shape[1])
        # Values beyond about 1e154 overflow their squares: the co-moments become inf, which
        # the checks downstream report (max_abs names the column and the rows).
        with np.errstate(over="ignore", invalid="ignore"):
            mean = Z.mean(axis=0)
            return cls.of_centered(Z - mean, mean)

    @classmethod
    def of_centered(cls, centered: np.ndarray, mean: np.ndarray) -> CoMoments:
        """Co-moments from a block already centered at ``mean`` (finite values).

        The rounded mean leaves a small column sum; removing its outer product keeps the
        result equal to centering at the exact mean, to first order.
        """
        n = centered.shape[0]
        with np.errstate(over="ignore", invalid="ignore"):
            residual_sum = centered.sum(axis=0)
            comoment = centered.T @ centered - np.outer(residual_sum, residual_sum) / n
        return cls(n, mean + residual_sum / n, comoment)

    @classmethod
    def of_runs(
        cls, product: np.ndarray, shifts: np.ndarray, sums: np.ndarray, counts: np.ndarray
    ) -> CoMoments:
        """Co-moments of rows whose runs were each centered at their own ``shifts[s]``:
        ``product`` is CᵀC of the centered rows C, ``sums[s]`` the column sums of run s in
        C and ``counts[s]`` its rows.

        With δ_s = shift_s - m for any m, each row of run s is c + δ_s, so the co-moment
        about m is CᵀC + Σ_s (sums_s δ_sᵀ + δ_s sums_sᵀ + counts_s δ_s δ_sᵀ): exact algebra,
        in which only small terms are rounded. m is the runs' mean, rounded; the rows'
        sum about it, t, moves it to the mean (m + t/n) and the co-moment by t tᵀ/n.
        """
        n = int(counts.sum())
        with np.errstate(over="ignore", invalid="ignore"):
            rounded_mean = (counts @ shifts) / n
            deltas = shifts - rounded_mean
            offset = sums.sum(axis=0) + counts @ deltas
            cross = sums.T @ deltas
            comoment = (product + cross + cross.T + (deltas.T * counts) @ deltas) - np.outer(
                offset, offset
            ) / n
        return cls(n, rounded_mean + offset / n, comoment)

    def diagonal(self) -> CoMoments:
        """The same rows' co-moments without the cross-products."""
        return CoMoments(self.n, self.mean, np.diag(np.diag(self.comoment)), False)

    def merge(self, other: CoMoments) -> CoMoments:
        n = self.n + other.n
        cross_products = self.cross_products and other.cross_products
        if n == 0:
            empty = CoMoments.empty(self.mean.size)
            return empty if cross_products else empty.diagonal()
        with np.errstate(over="ignore", invalid="ignore"):
            delta = other.mean - self.mean
            mean = self.mean + delta * (other.n / n)
            comoment = (
                self.comoment + other.comoment + np.outer(delta, delta) * (self.n * other.n / n)
            )
        merged = CoMoments(n, mean, comoment)
        return merged if cross_products else merged.diagonal()
