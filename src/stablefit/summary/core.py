"""The Summary: everything the later stages need, gathered in one pass over the batches."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import partial, reduce

import numpy as np

from stablefit.errors import StablefitInputError
from stablefit.io.partitions import over_partitions
from stablefit.io.schema import ArraySource, Batch, Schema, Source
from stablefit.parallel import default_workers, ordered_map
from stablefit.summary import extremes
from stablefit.summary.columns import ROWS_KEPT, ColumnStats
from stablefit.summary.comoments import CoMoments
from stablefit.summary.sample import RowSample, sample_capacity
from stablefit.summary.scan import DetailScan, center_runs
from stablefit.summary.sketch import DEFAULT_CAPACITY, QuantileSketch

SKETCH_BUDGET = 1 << 23
# Rows gathered at a time: the temporaries of a piece stay in the processor's cache.
PIECE_ROWS = 8192
# Values of the groups of batches in flight at most (see _groups), 256 MiB of float64.
GROUP_BUDGET = 4 * SKETCH_BUDGET
#: Whether to form the co-moments' cross-products: always, never, or what a function of the
#: first batch's co-moments decides for the rest (see :func:`summarize`).
CrossProducts = bool | Callable[[CoMoments], bool]
#: Most feature columns a Summary takes. Its co-moments and the solver's factor are
#: (d+2)×(d+2) matrices, several at once: at 2,000 columns 32 MB each, at 10,000 0.8 GB;
#: factoring them (the fit's condition number, the doctor's eigenvalues) takes time
#: growing as d³, about a minute of one core per factorization at 10,000.
MAX_FEATURES = 2_000


def sketch_capacity(p: int) -> int:
    """Values each of p columns' quantile sketches keeps exactly (SKETCH_BUDGET in all)."""
    return max(1 << 12, min(DEFAULT_CAPACITY, SKETCH_BUDGET // max(p, 1)))


@dataclass
class Summary:
    """One-pass, mergeable statistics of a design matrix X and, optionally, a target y.

    The p "columns" are the features followed by the target (when there is one).
    ``columns`` holds per-column moments over the finite values; ``complete`` the
    centered co-moments of the complete rows (every feature and the target finite), which
    is what least squares and training see. ``sample`` holds a few thousand whole rows,
    evenly spread (:class:`~stablefit.summary.sample.RowSample`), for residual plots.
    ``a.merge(b)`` equals summarizing the rows of ``a`` followed by those of ``b``, to
    rounding.

    Examples
    --------
    >>> import numpy as np
    >>> from stablefit.summary import Summary
    >>> s = Summary.from_arrays(np.array([[1.0], [2.0], [3.0]]), np.array([2.0, 4.0, 6.0]))
    >>> s.n_complete, float(s.complete_mean[1])
    (3, 4.0)
    """

    schema: Schema
    has_target: bool
    n_rows: int = 0
    columns: ColumnStats = field(default=None)  # type: ignore[assignment]
    complete: CoMoments = field(default=None)  # type: ignore[assignment]
    sketches: list[QuantileSketch] | None = None
    sample: RowSample | None = None
    _robust: dict[str, np.ndarray] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        p = self.p
        if self.columns is None:
            self.columns = ColumnStats(p)
        if self.complete is None:
            self.complete = CoMoments.empty(p)

    @property
    def n_features(self) -> int:
        return self.schema.n_features

    @property
    def p(self) -> int:
        return self.n_features + int(self.has_target)

    @property
    def names(self) -> tuple[str, ...]:
        target = (self.schema.target_name or "y",) if self.has_target else ()
        return self.schema.feature_names + target

    @property
    def n_complete(self) -> int:
        return self.complete.n

    @property
    def complete_mean(self) -> np.ndarray:
        return self.complete.mean

    @property
    def comoment(self) -> np.ndarray:
        if not self.complete.cross_products:
            raise ValueError(
                "this Summary was built without cross-products: only each column's own "
                "co-moment (complete_m2)"
            )
        return self.complete.comoment

    @property
    def complete_m2(self) -> np.ndarray:
        """Each column's sum of squares about its mean over the complete rows."""
        return np.diag(self.complete.comoment).copy()

    @property
    def robust_exact(self) -> bool:
        return self.sketches is not None and all(s.exact for s in self.sketches)

    # -- building ---------------------------------------------------------------------

    @classmethod
    def of_batches(
        cls,
        batches: Sequence[Batch],
        schema: Schema,
        *,
        detail: bool = True,
        cross_products: bool = True,
    ) -> Summary:
        """Summary of consecutive batches (at least one), as if they were one batch.

        With detail, from compiled passes over them; without, from the co-moments of
        cache-sized pieces of each batch (:meth:`_of_finite_batch`), of their diagonal
        only without ``cross_products``. A batch with NaN or inf, or one whose sums
        overflow, is gathered piece by piece with NumPy and merged. Either way it keeps a
        :class:`~stablefit.summary.sample.RowSample` of their rows.
        """
        summary = cls._of_detailed_batches(batches, schema) if detail else None
        if summary is None:
            summary = reduce(
                Summary.merge,
                (
                    (None if detail else cls._of_finite_batch(b, schema, cross_products))
                    or cls._of_batch_in_pieces(b, schema, detail)
                    for b in batches
                ),
            )
        if not cross_products:
            summary.complete = summary.complete.diagonal()
        capacity = sample_capacity(summary.p)
        summary.sample = reduce(
            RowSample.merge,
            (RowSample.of_block(b.X, b.y, b.first_row, capacity) for b in batches),
        )
        return summary

    @classmethod
    def _of_finite_batch(
        cls, batch: Batch, schema: Schema, cross_products: bool = True
    ) -> Summary | None:
        """Moments, ranges and co-moments of a batch without NaN or inf (None otherwise).

        Piece by piece, a compiled pass writes the rows centered at the means of short
        runs (:func:`~stablefit.summary.scan.center_runs`) while gathering the ranges, BLAS
        forms the centered cross-product (without ``cross_products``, the pass adds up
        only the squares of the centered values instead of writing them), and the runs'
        offsets are added back exactly (:meth:`CoMoments.of_runs`).
        """
        has_target = batch.y is not None
        p = batch.X.shape[1] + int(has_target)
        if batch.n_rows == 0:
            return None
        centered = np.empty((min(batch.n_rows, PIECE_ROWS), p)) if cross_products else None
        product, low, high = np.zeros((p, p)), np.full(p, np.inf), np.full(p, -np.inf)
        runs_of_pieces = []
        for start in range(0, batch.n_rows, PIECE_ROWS):
            rows = slice(start, start + PIECE_ROWS)
            y = None if batch.y is None else batch.y[rows]
            runs = center_runs(batch.X[rows], y, centered)
            if runs is None:
                return None
            piece_low, piece_high, shifts, sums, counts, squares = runs
            with np.errstate(over="ignore", invalid="ignore"):
                if centered is None:
                    product[np.diag_indices(p)] += squares
                else:
                    C = centered[: int(counts.sum())]
                    product += C.T @ C
            runs_of_pieces.append((shifts, sums, counts))
            low, high = np.minimum(low, piece_low), np.maximum(high, piece_high)
        # The offsets of all the batch's runs are added back at once.
        shifts, sums, counts = (
            np.concatenate(parts) for parts in zip(*runs_of_pieces, strict=True)
        )
        moments = CoMoments.of_runs(product, shifts, sums, counts)
        summary = cls(schema=schema, has_target=has_target, n_rows=batch.n_rows)
        summary.complete = moments
        m2 = np.diag(moments.comoment).copy()
        summary.columns = ColumnStats.of_finite_block(batch.n_rows, moments.mean, m2, low, high)
        return summary

    @classmethod
    def _of_batch_in_pieces(cls, batch: Batch, schema: Schema, detail: bool) -> Summary:
        summary: Summary | None = None
        for start in range(0, max(batch.n_rows, 1), PIECE_ROWS):
            rows = slice(start, start + PIECE_ROWS)
            y = None if batch.y is None else batch.y[rows]
            piece = cls._of_piece(Batch(batch.X[rows], y, batch.first_row + start), schema, detail)
            summary = piece if summary is None else summary.merge(piece)
        assert summary is not None
        return summary

    @classmethod
    def _of_detailed_batches(cls, batches: Sequence[Batch], schema: Schema) -> Summary | None:
        """The detailed Summary of consecutive batches from compiled passes over their
        columns (:class:`DetailScan`); None when a column's sum overflows, which the NumPy
        path handles."""
        n = sum(batch.n_rows for batch in batches)
        has_target = batches[0].y is not None
        p = batches[0].X.shape[1] + int(has_target)
        if n == 0:
            return None
        scan = DetailScan(p, n, ROWS_KEPT)
        for batch in batches:
            if not scan.add(batch.X, batch.y, batch.first_row):
                return None
        summary = cls(schema=schema, has_target=has_target, n_rows=n)
        n_complete, mean, comoment = scan.moments
        summary.complete = CoMoments(int(n_complete[0]), mean, comoment)
        columns = summary.columns
        columns.count, columns.mean, columns.m2 = scan.column_moments
        has = columns.count > 0
        columns.min = np.where(has, scan.low, np.nan)
        columns.max = np.where(has, scan.high, np.nan)
        columns.max_abs = np.where(has, np.maximum(np.abs(scan.low), np.abs(scan.high)), np.nan)
        columns.is_integer = scan.is_integer
        n_nan, nan_rows, n_inf, inf_rows = scan.nonfinite
        columns.n_nan, columns.n_inf = n_nan, n_inf
        columns.nan_rows = [
            rows[: min(c, ROWS_KEPT)] for rows, c in zip(nan_rows, n_nan, strict=True)
        ]
        columns.inf_rows = [
            rows[: min(c, ROWS_KEPT)] for rows, c in zip(inf_rows, n_inf, strict=True)
        ]
        columns.extremes = extremes.kept(scan.buffers)
        # Sorted in place, once for all columns (NaN, after a column's values, goes last);
        # the sketches need not sort them again.
        values = scan.columns
        for j, count in enumerate(scan.fill):
            values[j, count:] = np.nan
        values.sort(axis=1)
        summary.sketches = []
        for row, count in zip(values, scan.fill, strict=True):
            sketch = QuantileSketch(capacity=sketch_capacity(p))
            sketch.update(row[:count], is_sorted=True)
            summary.sketches.append(sketch)
        return summary

    @classmethod
    def _of_piece(cls, batch: Batch, schema: Schema, detail: bool) -> Summary:
        summary = cls(schema=schema, has_target=batch.y is not None, n_rows=batch.n_rows)
        Z = batch.X if batch.y is None else np.column_stack([batch.X, batch.y])
        finite = np.isfinite(Z)
        complete = finite.all(axis=1)
        all_complete = bool(complete.all())
        summary.complete = CoMoments.of_block(Z if all_complete else Z[complete])
        # In a block without NaN or inf the co-moments already hold each column's moments.
        moments = (summary.complete.mean, np.diag(summary.complete.comoment).copy())
        summary.columns = ColumnStats.of_block(
            Z,
            batch.first_row,
            finite=finite,
            moments=moments if all_complete else None,
            detail=detail,
        )
        if detail:
            summary.sketches = []
            for j in range(Z.shape[1]):
                sketch = QuantileSketch(capacity=sketch_capacity(Z.shape[1]))
                column = Z[:, j]
                sketch.update(column[np.isfinite(column)])
                summary.sketches.append(sketch)
        return summary

    def merge(self, other: Summary) -> Summary:
        """A new Summary of ``self``'s rows followed by ``other``'s."""
        if self.names != other.names:
            raise ValueError(f"cannot merge summaries of {self.names} and {other.names}")
        sketches = None
        sample = self.sample if other.sample is None else other.sample
        if self.sample is not None and other.sample is not None:
            sample = self.sample.merge(other.sample)
        if self.sketches is not None and other.sketches is not None:
            sketches = [a.merge(b) for a, b in zip(self.sketches, other.sketches, strict=True)]
        return Summary(
            schema=self.schema,
            has_target=self.has_target,
            n_rows=self.n_rows + other.n_rows,
            columns=self.columns.merge(other.columns),
            complete=self.complete.merge(other.complete),
            sketches=sketches
            if self.n_rows and other.n_rows
            else (self.sketches if other.n_rows == 0 else other.sketches),
            sample=sample,
        )

    @classmethod
    def from_arrays(
        cls,
        X: np.ndarray,
        y: np.ndarray | None = None,
        *,
        feature_names: Sequence[str] | None = None,
        detail: bool = True,
    ) -> Summary:
        """Summarize in-memory arrays (X is (n, d), y is (n,) or None)."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 1:
            X = X[:, None]
        y = None if y is None else np.asarray(y, dtype=np.float64).ravel()
        names = (
            tuple(feature_names)
            if feature_names is not None
            else tuple(f"x{j}" for j in range(X.shape[1]))
        )
        schema = Schema(feature_names=names, target_name=None if y is None else "y")
        return summarize(ArraySource(X, y, schema), detail=detail)

    # -- derived quantities -------------------------------------------------------------

    def quantile(self, q: float) -> np.ndarray:
        if self.sketches is None:
            raise ValueError("this Summary was built with detail=False: no quantiles")
        return np.array([s.quantile(q) for s in self.sketches])

    def median(self) -> np.ndarray:
        """The median of each column; computed once (the checks and the report share it)."""
        if "median" not in self._robust:
            self._robust["median"] = self.quantile(0.5)
        return self._robust["median"].copy()

    def mad(self) -> np.ndarray:
        """Median absolute deviation from the median, per column (not scaled by 1.4826);
        computed once."""
        if "mad" not in self._robust:
            assert self.sketches is not None
            self._robust["mad"] = np.array(
                [
                    s.absolute_deviation_quantile(m)
                    for s, m in zip(self.sketches, self.median(), strict=True)
                ]
            )
        return self._robust["mad"].copy()

    def gram(self, intercept: bool = True) -> tuple[np.ndarray, np.ndarray, float]:
        """``(AᵀA, Aᵀy, yᵀy)`` over the complete rows, A = [X, 1] (bias column last)."""
        if not self.has_target:
            raise ValueError("this Summary has no target")
        d, n = self.n_features, self.n_complete
        mean, C = self.complete.mean, self.complete.comoment
        raw = C + n * np.outer(mean, mean)
        G, g, yy = raw[:d, :d], raw[:d, d], float(raw[d, d])
        if intercept:
            ones = n * mean[: d + 1]
            G = np.block([[G, ones[:d, None]], [ones[None, :d], np.array([[float(n)]])]])
            g = np.append(g, ones[d])
        return G, g, yy


def check_width(schema: Schema) -> None:
    """Refuse, before reading, more feature columns than :data:`MAX_FEATURES`."""
    d = schema.n_features
    if d > MAX_FEATURES:
        gigabytes = 8 * (d + 2) ** 2 / 1e9
        raise StablefitInputError(
            f"{schema.origin}: {d:,} feature columns; stablefit takes at most "
            f"{MAX_FEATURES:,}. It keeps several {d:,}×{d:,} matrices ({gigabytes:.1f} GB "
            "each) and factors them in time growing as the cube of the width. Select the "
            "columns you need (columns=[...], or a narrower file), or reduce them first "
            "(e.g. PCA)."
        )


def summarize(
    source: Source | Iterable[Batch], *, detail: bool = True, cross_products: CrossProducts = True
) -> Summary:
    """One pass over a source's batches.

    A source spread over a cluster is summarized partition by partition where each is
    read, and the partitions' Summaries merged (:func:`~stablefit.io.partitions.over_partitions`).

    Parameters
    ----------
    source : Source
        Anything with a ``schema`` and a ``batches()`` method (see :mod:`stablefit.io`).
    detail : bool, default True
        Also gather what diagnostics need (quantile sketches, extreme values with rows);
        the solver needs only the moments and co-moments.
    cross_products : bool or callable, default True
        Without detail: form the co-moments' cross-products (n·p² flops, most of such a
        pass). False forms each column's own only, and ``Summary.comoment`` then refuses
        (``complete_m2`` holds the diagonal). A callable is asked with the first batch's
        co-moments (of each partition, on a cluster) whether to form them for the rest;
        a solver that uses them only when they are well conditioned decides it there.
    """
    check_width(source.schema)
    if detail and cross_products is not True:
        raise ValueError("a detailed Summary always forms the cross-products")
    summarize_here = partial(_summarize_here, detail=detail, cross_products=cross_products)
    summary = over_partitions(source, summarize_here, Summary.merge)
    if summary.schema is not source.schema:  # a partition's schema names only itself
        summary = replace(summary, schema=source.schema)
    return summary


def _summarize_here(source: Source, *, detail: bool, cross_products: CrossProducts) -> Summary:
    schema = source.schema
    workers = default_workers()

    summary: Summary | None = None
    batches = iter(source.batches())
    if callable(cross_products):
        first = next(batches, None)
        if first is not None:
            summary = Summary.of_batches([first], schema, detail=False)
            if not cross_products(summary.complete):
                summary.complete = summary.complete.diagonal()
        cross_products = summary is None or summary.complete.cross_products
    groups = _groups(batches, workers) if detail else ([b] for b in batches)
    parts = ordered_map(
        lambda group: Summary.of_batches(
            group, schema, detail=detail, cross_products=cross_products
        ),
        groups,
        workers=workers,
    )
    for part in parts:
        summary = part if summary is None else summary.merge(part)
    if summary is None:
        has_target = getattr(source, "y", None) is not None or schema.target_name is not None
        summary = Summary(schema=schema, has_target=has_target)
    return summary


def _groups(batches: Iterable[Batch], workers: int) -> Iterator[list[Batch]]:
    """Consecutive batches, gathered until they hold more rows than a quantile sketch keeps
    exactly.

    The worker that summarizes a group then sorts and compacts its sketches itself, and the
    main thread, which merges the groups' summaries one after the other, mostly halves
    sorted runs. A group holds at most ``GROUP_BUDGET / (workers + 1)`` values, as
    ``workers + 1`` of them may be in flight.
    """
    group: list[Batch] = []
    rows = 0
    for batch in batches:
        group.append(batch)
        rows += batch.n_rows
        p = batch.X.shape[1] + int(batch.y is not None)
        if rows > min(sketch_capacity(p), GROUP_BUDGET // ((workers + 1) * p)):
            yield group
            group, rows = [], 0
    if group:
        yield group
