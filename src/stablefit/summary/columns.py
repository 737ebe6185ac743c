"""Per-column statistics in one pass, mergeable (Chan, Golub and LeVeque's update)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from stablefit.summary import extremes

ROWS_KEPT = 20


def _first_rows(mask: np.ndarray, row_ids: np.ndarray, limit: int) -> list[np.ndarray]:
    return [row_ids[np.flatnonzero(mask[:, j])[:limit]] for j in range(mask.shape[1])]


def _join_rows(a: list[np.ndarray], b: list[np.ndarray], limit: int) -> list[np.ndarray]:
    return [np.concatenate([ra, rb])[:limit] for ra, rb in zip(a, b, strict=True)]


@dataclass
class ColumnStats:
    """Moments, ranges and where the non-finite values are, for p columns.

    ``mean`` and ``m2`` (sum of squared deviations) cover the finite values only; ``min``,
    ``max`` and ``max_abs`` too (NaN while a column has no finite value). ``extremes[j]``
    holds up to ``2 * ROWS_KEPT`` (value, row) pairs: the smallest and the largest finite
    values of column j with their 0-based rows — enough to name outlying rows later.
    """

    p: int
    count: np.ndarray = field(init=False)
    n_nan: np.ndarray = field(init=False)
    n_inf: np.ndarray = field(init=False)
    mean: np.ndarray = field(init=False)
    m2: np.ndarray = field(init=False)
    min: np.ndarray = field(init=False)
    max: np.ndarray = field(init=False)
    max_abs: np.ndarray = field(init=False)
    is_integer: np.ndarray = field(init=False)
    nan_rows: list[np.ndarray] = field(init=False)
    inf_rows: list[np.ndarray] = field(init=False)
    extremes: list[tuple[np.ndarray, np.ndarray]] = field(init=False)

    def __post_init__(self) -> None:
        p = self.p
        self.count = np.zeros(p, dtype=np.int64)
        self.n_nan = np.zeros(p, dtype=np.int64)
        self.n_inf = np.zeros(p, dtype=np.int64)
        self.mean = np.zeros(p)
        self.m2 = np.zeros(p)
        self.min = np.full(p, np.nan)
        self.max = np.full(p, np.nan)
        self.max_abs = np.full(p, np.nan)
        self.is_integer = np.ones(p, dtype=bool)
        empty = np.empty(0, dtype=np.int64)
        self.nan_rows = [empty] * p
        self.inf_rows = [empty] * p
        self.extremes = [(np.empty(0), empty)] * p

    @property
    def var(self) -> np.ndarray:
        """Population variance (ddof = 0) of the finite values."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count > 0, self.m2 / np.maximum(self.count, 1), np.nan)

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.var)

    @classmethod
    def of_block(
        cls,
        Z: np.ndarray,
        first_row: int,
        *,
        finite: np.ndarray,
        moments: tuple[np.ndarray, np.ndarray] | None = None,
        detail: bool = True,
    ) -> ColumnStats:
        """Statistics of one block ``Z`` (rows, p) whose first row has index ``first_row``.

        ``finite`` is ``np.isfinite(Z)``. ``moments`` (mean, m2), when the caller already
        has them for an all-finite block, saves two passes over it. ``detail=False``
        leaves out what only diagnostics need (extremes, integrality).
        """
        stats = cls(Z.shape[1])
        all_finite = bool(finite.all())
        row_ids = np.arange(first_row, first_row + Z.shape[0])
        if all_finite:
            stats.count[:] = Z.shape[0]
            values = Z
        else:
            nan = np.isnan(Z)
            inf = ~finite & ~nan
            stats.count = finite.sum(axis=0)
            stats.n_nan = nan.sum(axis=0)
            stats.n_inf = inf.sum(axis=0)
            stats.nan_rows = _first_rows(nan, row_ids, ROWS_KEPT)
            stats.inf_rows = _first_rows(inf, row_ids, ROWS_KEPT)
            values = np.where(finite, Z, 0.0)
        has = stats.count > 0
        if all_finite and moments is not None:
            stats.mean, stats.m2 = moments
        else:
            # Sums and squares of values near 1e308 overflow to inf; max_abs keeps the
            # evidence.
            with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
                total = values.sum(axis=0)
                stats.mean = np.where(has, total / np.maximum(stats.count, 1), 0.0)
                deviations = values - stats.mean
                if not all_finite:
                    deviations = np.where(finite, deviations, 0.0)
                stats.m2 = np.einsum("ij,ij->j", deviations, deviations)
        low = Z if all_finite else np.where(finite, Z, np.inf)
        high = Z if all_finite else np.where(finite, Z, -np.inf)
        if Z.shape[0]:
            stats.min = np.where(has, low.min(axis=0), np.nan)
            stats.max = np.where(has, high.max(axis=0), np.nan)
            stats.max_abs = np.where(has, np.maximum(np.abs(stats.min), np.abs(stats.max)), np.nan)
        if not detail:
            return stats
        stats.is_integer = np.all(np.equal(np.floor(values), values), axis=0)
        if Z.shape[0]:
            stats.extremes = [
                extremes.select(Z[finite[:, j], j], row_ids[finite[:, j]], ROWS_KEPT)
                if not all_finite
                else extremes.select(Z[:, j], row_ids, ROWS_KEPT)
                for j in range(Z.shape[1])
            ]
        return stats

    @classmethod
    def of_finite_block(
        cls, n: int, mean: np.ndarray, m2: np.ndarray, low: np.ndarray, high: np.ndarray
    ) -> ColumnStats:
        """Statistics of a block of n rows without NaN or inf, from its moments and range."""
        stats = cls(mean.size)
        stats.count[:] = n
        stats.mean, stats.m2, stats.min, stats.max = mean, m2, low, high
        stats.max_abs = np.maximum(np.abs(low), np.abs(high))
        return stats

    def merge(self, other: ColumnStats) -> ColumnStats:
        """Statistics of both sets of rows (``self``'s rows come first)."""
        out = ColumnStats(self.p)
        n_a, n_b = self.count, other.count
        out.count = n_a + n_b
        out.n_nan = self.n_nan + other.n_nan
        out.n_inf = self.n_inf + other.n_inf
        total = np.maximum(out.count, 1)
        with np.errstate(invalid="ignore", over="ignore"):
            delta = other.mean - self.mean
            out.mean = self.mean + delta * (n_b / total)
            out.m2 = self.m2 + other.m2 + delta**2 * (n_a * n_b / total)
        out.min = np.fmin(self.min, other.min)
        out.max = np.fmax(self.max, other.max)
        out.max_abs = np.fmax(self.max_abs, other.max_abs)
        out.is_integer = self.is_integer & other.is_integer
        out.nan_rows = _join_rows(self.nan_rows, other.nan_rows, ROWS_KEPT)
        out.inf_rows = _join_rows(self.inf_rows, other.inf_rows, ROWS_KEPT)
        out.extremes = [
            (va, ra)
            if not vb.size
            else (vb, rb)
            if not va.size
            else extremes.select(np.concatenate([va, vb]), np.concatenate([ra, rb]), ROWS_KEPT)
            for (va, ra), (vb, rb) in zip(self.extremes, other.extremes, strict=True)
        ]
        return out
