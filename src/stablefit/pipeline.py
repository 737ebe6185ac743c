"""The pipeline: read -> summarize -> solve -> FitResult."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from stablefit.cov_type import normalize_cov_type
from stablefit.errors import StablefitInputError
from stablefit.io import ArraySource, Batch, CachingSource, Source, open_source
from stablefit.io.columns import quote_names
from stablefit.io.memory import float_array, is_dask_collection
from stablefit.io.partitions import PartitionedSource, is_distributed, over_partitions
from stablefit.missing import MISSING_CHOICES, Missing
from stablefit.parallel import blas_threads_for
from stablefit.rowdata import RowData, column_names, refuse_the_target, row_data, with_rows
from stablefit.solve.accuracy import (
    UNIT_ROUNDOFF,
    cholesky_contraction_bound,
    condition_number,
)
from stablefit.solve.blocks import RawBlock, SourceBlocks
from stablefit.solve.certificate import Certificate, trusted_digits
from stablefit.solve.covariance import (
    ROW_MEATS,
    Bread,
    CovarianceBuilder,
    RowStatistic,
    RowStatistics,
)
from stablefit.solve.dd import dd_mul, dd_sum
from stablefit.solve.design import BeyondRange, ScaledDesign, power_of_two_scale
from stablefit.solve.linalg import cholesky_solve
from stablefit.solve.lstsq import (
    CHOLESKY_CONDITION_LIMIT,
    EXACT_PASS_VALUES,
    GRAM_BUDGET,
    GRAM_REFINEMENT_CONDITION,
    Refinement,
    dependent_columns,
    refine,
    statistics_pass,
    triangular_factor_from_comoments,
    triangular_factor_qr,
)
from stablefit.solve.prediction import PredictionBasis
from stablefit.solve.residuals import SampledRows, residual_sample
from stablefit.solve.result import DroppedFeature, FitResult, covariance_notes, number_notes
from stablefit.summary import Summary, summarize
from stablefit.summary.comoments import CoMoments
from stablefit.summary.core import CrossProducts

# A column is left out as collinear when the sine of its angle to the span of the columns
# before it is below this; Householder QR resolves that sine to about 1e-15.
COLLINEAR_SINE = 1e-13
# Squares of larger values overflow float64: such entries are corrupt or need rescaling.
LARGEST_USABLE = 1e150
# Columns varying by less than this (2^-1000, about 1e-301) are refused: they reach into
# float64's subnormal range, and their scaled design would need factors beyond it.
SMALLEST_SPREAD = 2.0**-1000
# Columns whose spread is below this (2^-480, about 1e-145) have squares too small for the
# co-moments to hold all their digits.
TINY_SPREAD = 2.0**-480
# The factor from the co-moments is used when each refinement step gains at least this
# much (four digits); otherwise (columns whose offset dwarfs their spread, or a condition
# number near CHOLESKY_CONDITION_LIMIT) a QR factor is worth its cost.
CHOLESKY_CONTRACTION_LIMIT = 1e-4
# The Summary forms the cross-products for the factor from the co-moments unless the first
# batch's already give a factor this much worse conditioned than that factor may be
# (CHOLESKY_CONDITION_LIMIT): the whole data's would be rejected as well, and a QR pass
# factors the data instead. Rows ordered so that the first batch misleads cost that pass,
# never a digit.
FIRST_BATCH_CONDITION_LIMIT = 100 * CHOLESKY_CONDITION_LIMIT


def fit(
    X: Any,
    y: Any = None,
    *,
    target: str | None = None,
    intercept: bool = True,
    missing: Missing = "error",
    feature_names: Sequence[str] | None = None,
    drop_non_numeric: bool = False,
    engine: Any = None,
    weights: Any = None,
    cov_type: str | None = None,
    groups: Any = None,
    use_t: bool = True,
) -> FitResult:
    """Least-squares fit of y on X, exact to the digits the certificate states.

    Parameters
    ----------
    X : array-like, DataFrame, pyarrow Table, Dask DataFrame or Array, or path
        The features (and, for tables and files, the target column named by ``target``).
        A path names a CSV, Parquet or Feather (Arrow IPC) file, or a directory or glob
        of them read as one table.
    y : array-like, optional
        The target when it is not a column of ``X``.
    target : str, optional
        Name of the target column in ``X``.
    intercept : bool, default True
        Fit a constant term.
    missing : {"error", "drop", "impute"}, default "error"
        What to do with NaN and inf: raise an error naming columns and rows; leave those
        rows out (counted in ``n_dropped_rows``); or replace non-finite feature values by
        the column's median (rows with a non-finite target are left out). A row whose
        weight or cluster key is missing counts as such a row (never imputed).
    feature_names : sequence of str, optional
        Names for array columns.
    drop_non_numeric : bool, default False
        Leave out text columns of tables and files instead of raising an error.
    engine : distributed.Client or Engine, optional
        Read files on this cluster's workers (see :mod:`stablefit.engines`); Dask
        collections run on their default client without it. Only results the size of
        the co-moment matrix travel back, and the answer is the one-machine answer.
    weights : array-like or str, optional
        Weighted least squares: one positive weight per row (an array, or the name of a
        column of ``X``, which is then not a feature). A zero, negative or infinite weight
        is an error naming its rows.
    cov_type : {"nonrobust", "HC0", "HC1", "HC2", "HC3", "cluster"}, optional
        The covariance of the coefficients behind standard errors, tests and intervals.
        Default ``"cluster"`` when ``groups`` is given, else ``"nonrobust"``. Another type
        of the same fit comes from ``result.get_robustcov(...)``.
    groups : array-like or str or pair of str, optional
        Cluster keys, one or two per row (two-way clustering): an array of shape (n,) or
        (n, 2) of any type, or the names of one or two columns of ``X`` (not features).
    use_t : bool, default True
        Student's t and F with ``df_inference`` degrees of freedom (Stata's convention);
        False uses the normal and χ² (statsmodels' default for robust covariances).

    Returns
    -------
    FitResult

    Examples
    --------
    >>> import numpy as np, stablefit
    >>> X = np.array([[1.0], [2.0], [3.0], [4.0]])
    >>> result = stablefit.fit(X, np.array([3.0, 5.0, 7.1, 8.9]))
    >>> round(float(result.coef[0]), 6), round(result.intercept, 6)
    (1.98, 1.05)
    >>> robust = stablefit.fit(X, np.array([3.0, 5.0, 7.1, 8.9]), cov_type="HC1")
    >>> bool(robust.bse[1] != result.bse[1])
    True
    """
    if missing not in MISSING_CHOICES:
        raise StablefitInputError(
            f"missing={missing!r} is not an option; use one of {', '.join(MISSING_CHOICES)}"
        )
    cov_type = default_cov_type(cov_type, groups)
    weights_name, group_names = column_names(X, weights, groups)
    refuse_the_target(target, weights_name, group_names)
    source = open_source(
        X,
        y,
        target=target,
        feature_names=feature_names,
        drop_non_numeric=drop_non_numeric,
        engine=engine,
        exclude=[name for name in (weights_name, *group_names) if name is not None],
    )
    n_rows = None if isinstance(X, str | os.PathLike) or is_dask_collection(X) else _length(X)
    return fit_source(
        source,
        intercept=intercept,
        missing=missing,
        rows=row_data(X, weights, groups, n_rows),
        cov_type=cov_type,
        use_t=use_t,
        regroup=lambda keys: row_data(X, None, keys, n_rows),
    )


def default_cov_type(cov_type: str | None, groups: Any) -> str:
    """``cov_type`` checked; None means "cluster" with groups, "nonrobust" without."""
    if cov_type is None:
        return "nonrobust" if groups is None else "cluster"
    return normalize_cov_type(cov_type)


def _length(X: Any) -> int | None:
    try:
        return len(X)
    except TypeError:
        return None


def fit_source(
    source: Source,
    *,
    intercept: bool = True,
    missing: Missing = "error",
    rows: RowData | None = None,
    cov_type: str = "nonrobust",
    use_t: bool = True,
    regroup: Callable[[Any], RowData | None] | None = None,
) -> FitResult:
    """Fit from an opened :class:`~stablefit.io.Source` (two or more passes over it).

    Files and tables are parsed once when their float64 data fit the cache budget
    (:data:`~stablefit.io.cache.DEFAULT_CACHE_BYTES`), and read again per pass otherwise;
    on a cluster, they are held in its memory after the first pass when they fit there.
    ``rows`` gives each row's weight and cluster keys (:func:`stablefit.rowdata.row_data`);
    ``regroup(keys)`` reads the cluster keys of another clustering for ``get_robustcov``
    (default: keys given as arrays).
    """
    cov_type = normalize_cov_type(cov_type)
    on_cluster = is_distributed(source)
    if rows is not None and isinstance(source, PartitionedSource):
        raise StablefitInputError(
            "weights and cluster keys work with one file or table for now, not with many "
            "files or Dask inputs: fit one file, or a DataFrame with those columns"
        )
    if not isinstance(source, ArraySource) and not on_cluster:
        source = CachingSource(source)
    detail = missing == "impute"
    weighted = rows is not None and rows.weighted
    # Without detail, the co-moments' cross-products serve only the factor from the
    # co-moments, tried for an unweighted fit with an intercept; on one machine, the
    # first batch tells whether it can serve.
    cross_products: CrossProducts = detail or (intercept and not weighted)
    if not detail and cross_products and not on_cluster:
        cross_products = _comoments_may_precondition
    summary = summarize(source, detail=detail, cross_products=cross_products)
    _validate(summary, source, missing)
    if on_cluster:
        assert isinstance(source, PartitionedSource)
        source = source.kept(summary.n_rows * summary.p * 8)
    schema = summary.schema
    largest = float(np.nanmax(summary.columns.max_abs, initial=0.0))
    n_side_missing = 0 if rows is None else rows.check(schema, missing, largest)
    if cov_type == "cluster" and (rows is None or not rows.n_ways):
        raise StablefitInputError(
            "cov_type='cluster' needs cluster keys: pass groups= (one or two columns of "
            "keys, or their names; --cluster COL[,COL] on the command line)"
        )
    d = summary.n_features
    medians = summary.median()[:d] if missing == "impute" else None
    y_column = summary.columns
    n_feature_dropped = summary.n_rows - (
        int(y_column.count[d]) if medians is not None else summary.n_complete
    )
    n_imputed = 0
    if medians is not None:
        n_imputed = int(np.sum(summary.n_rows - y_column.count[:d]))

    notes = [f"Column '{c.name}' was left out ({c.reason})." for c in schema.dropped]
    notes += _rounded_integer_notes(summary)
    if n_imputed:
        notes.append(
            f"{n_imputed} non-finite feature values were replaced by their column's median."
        )
    mean = summary.complete_mean[:d]
    std = np.sqrt(summary.complete_m2[:d] / max(summary.n_complete, 1))
    if not intercept:
        std = np.sqrt(std**2 + mean**2)
    # Squares of spreads this small lose digits to underflow (or vanish): such columns are
    # scaled by their range instead, and the co-moments are not used for a factor.
    tiny = std < TINY_SPREAD
    std = np.where(tiny, (summary.columns.max[:d] - summary.columns.min[:d]) / 4, std)
    if not intercept:
        std = np.where(tiny, np.maximum(std, summary.columns.max_abs[:d] / 2), std)
    # Products of such values with the residuals fall below float64's normal range, where
    # double-double arithmetic loses its digits: exact residuals, whatever the size.
    exact = bool(tiny.any() or summary.columns.max_abs[d] < TINY_SPREAD)
    fit_rows = FitRows(medians, drop=n_feature_dropped > 0, drop_unweighted=n_side_missing > 0)
    design = ScaledDesign(
        SourceBlocks(with_rows(source, rows), (fit_rows,)),
        shift=mean if intercept else np.zeros(d),
        scale=power_of_two_scale(std),
        intercept=intercept,
    )
    # The factorizations and the certificate's decompositions are k × k: one BLAS thread
    # (the passes over the rows run on the cores already, one BLAS thread each).
    with blas_threads_for(d + 1):
        R, start, bound = None, None, None
        if (
            medians is None
            and intercept
            and not weighted
            and not n_side_missing
            and not exact
            and summary.complete.cross_products
        ):
            scaled = summary.comoment[:d, :d] / np.outer(design.scale, design.scale)
            R = triangular_factor_from_comoments(summary.n_complete, scaled)
        if R is not None:
            offset_ratio = float(np.max(summary.columns.max_abs[:d] / design.scale, initial=0.0))
            bound = cholesky_contraction_bound(R, offset_ratio, summary.n_complete)
            if bound > CHOLESKY_CONTRACTION_LIMIT:
                R, bound = None, None
        if R is not None:
            # The co-moments with the target give the normal-equations solution for free.
            slopes = cholesky_solve(R[1:, 1:], summary.comoment[:d, d] / design.scale)
            start = np.concatenate([[summary.complete_mean[d]], slopes])
        else:
            R, start = triangular_factor_qr(design)

        # Passes after the fit (get_robustcov) read the data again rather than keep the
        # cache alive with the result: a result must not hold hundreds of MB.
        later_source = source.source if isinstance(source, CachingSource) else source
        later_rows = None if rows is None else rows.uncached()

        def later_blocks(keys: Any) -> tuple[SourceBlocks, tuple[str, ...]]:
            if keys is None:
                names = () if later_rows is None else later_rows.group_names
                return SourceBlocks(with_rows(later_source, later_rows), (fit_rows,)), names
            other = row_data(None, None, keys, None) if regroup is None else regroup(keys)
            if other is None or not other.n_ways:
                raise StablefitInputError("groups= needs one or two columns of cluster keys")
            other.check(schema, "error")
            other = other.uncached()
            blocks = SourceBlocks(with_rows(later_source, later_rows, other), (fit_rows,))
            return blocks, other.group_names

        return _solve(
            design,
            R,
            rows=summary.n_rows,
            start=start,
            contraction_bound=bound,
            names=schema.feature_names,
            target_name=schema.target_name or "y",
            sst=None
            if weighted
            else _total_sum_of_squares(summary, intercept, imputed=medians is not None),
            missing=missing,
            n_imputed=n_imputed,
            notes=notes,
            sampled=_sampled_rows(summary, fit_rows, fit_rows.keep),
            inference=Inference(
                cov_type=cov_type,
                use_t=use_t,
                weights_name=None if rows is None else rows.weights_name,
                group_names=() if rows is None else rows.group_names,
                y_centre=float(summary.complete_mean[d]),
                later_blocks=later_blocks,
            ),
            exact=exact,
        )


def _comoments_may_precondition(first: CoMoments) -> bool:
    """Whether the first batch's co-moments leave the factor from the whole data's a
    chance: True unless every feature varies in the batch and their scaled co-moments
    have no Cholesky factor, or one conditioned beyond FIRST_BATCH_CONDITION_LIMIT."""
    d = first.mean.size - 1
    spread = np.sqrt(np.diag(first.comoment)[:d] / max(first.n, 1))
    if first.n <= d + 1 or not np.all(spread >= TINY_SPREAD):
        return True
    scale = power_of_two_scale(spread)
    try:
        R = np.linalg.cholesky(first.comoment[:d, :d] / np.outer(scale, scale))
    except np.linalg.LinAlgError:
        return False
    return bool(np.all(np.isfinite(R))) and condition_number(R) <= FIRST_BATCH_CONDITION_LIMIT


@dataclass(frozen=True)
class FitRows:
    """A batch's rows as the fit uses them: a raw block ``(X, None, y)`` without the rows
    that ``missing`` leaves out, or with features imputed by their ``medians``.

    Every batch has a target (checked before the passes that use this).
    """

    medians: np.ndarray | None
    drop: bool
    drop_unweighted: bool = False

    def keep(self, batch: Batch) -> np.ndarray | None:
        """Which of the batch's rows the fit uses (None: all of them)."""
        assert batch.y is not None
        keep = None
        if self.medians is not None:
            keep = np.isfinite(batch.y)
        elif self.drop:
            keep = np.isfinite(batch.X).all(axis=1) & np.isfinite(batch.y)
        if self.drop_unweighted:
            usable = batch.usable()
            keep = usable if keep is None else keep & usable
        return keep

    def __call__(self, batch: Batch) -> RawBlock:
        X, y = batch.X, batch.y
        assert y is not None
        if self.medians is not None:
            X = np.where(np.isfinite(X), X, self.medians)
        block = RawBlock(X, None, y, batch.weights, batch.groups)
        keep = self.keep(batch)
        return block if keep is None else block.rows(keep)


def _sampled_rows(
    summary: Summary,
    rows: Callable[[Batch], RawBlock],
    keep: Callable[[Batch], np.ndarray | None] = lambda batch: None,
) -> SampledRows | None:
    """The Summary's sample of rows as the fit uses them (``rows``), with their numbers."""
    sample = summary.sample
    if sample is None:
        return None
    batch = Batch(sample.X, sample.y)
    Z_hi, Z_lo, y = RawBlock(*rows(batch))[:3]
    kept = keep(batch)
    numbers = sample.rows if kept is None else sample.rows[kept]
    schema = summary.schema
    return SampledRows(Z_hi, Z_lo, y, numbers + schema.row_offset, schema.row_label)


@dataclass(frozen=True)
class Inference:
    """What the fit is asked for beyond the coefficients: the covariance type, t or
    normal, the weights' and clusters' names, and how to read the data after the fit."""

    cov_type: str = "nonrobust"
    use_t: bool = True
    weights_name: str | None = None
    group_names: tuple[str, ...] = ()
    y_centre: float = 0.0
    # The fit's blocks for passes after it (keys None), or with other cluster keys.
    later_blocks: Callable[[Any], tuple[SourceBlocks, tuple[str, ...]]] | None = None


# Beyond 2^53 float64 holds integers only to a multiple of 2, 4, ... 2048 (near 2^63).
EXACT_INTEGERS = 2.0**53
# Notes are written where that rounding is more than this part of a column's spread.
VISIBLE_ROUNDING = 1e-13


def _rounded_integer_notes(summary: Summary) -> list[str]:
    """Columns beyond 2^53 whose rounding to float64 is visible against their spread.

    Integers there (int64 ids, nanosecond timestamps, uint64 counters) are read as the
    nearest float64: the fit and its certificate are exact for the values as read, and the
    file's own integers may differ from them by up to half a spacing."""
    cols, notes = summary.columns, []
    for j, name in enumerate(summary.names):
        largest = float(cols.max_abs[j])
        if not cols.count[j] or not EXACT_INTEGERS <= largest < np.inf:
            continue
        spacing = float(np.spacing(largest))
        spread = float(cols.max[j] - cols.min[j])
        if spread == 0:  # every value rounded to one: the rounding may have made it constant
            notes.append(
                f"Column '{name}' reads as one value, {float(cols.max[j]):.4g}, beyond 2^53, "
                f"where float64 keeps integers only to a multiple of {spacing:g}: integers in "
                f"the file that differ from it by up to {spacing / 2:g} all read as it, so the "
                "column is constant here even if it is not in the file. Subtract an offset "
                "(such as the column's minimum) before saving the file to fit the exact "
                "integers."
            )
        elif spacing / 2 > VISIBLE_ROUNDING * spread:
            notes.append(
                f"Column '{name}' holds values up to {largest:.4g}, beyond 2^53, where float64 "
                f"keeps integers only to a multiple of {spacing:g}: integers in the file may "
                f"differ from what was read by up to {spacing / 2:g} ({spacing / 2 / spread:.1e} "
                "of the column's spread). The fit and its digits are those of the values as "
                "read; subtract an offset (such as the column's minimum) before saving the "
                "file to fit the exact integers."
            )
    return notes


def _validate(summary: Summary, source: Source, missing: str) -> None:
    schema, cols, d = summary.schema, summary.columns, summary.n_features
    names = summary.names
    if not summary.has_target:
        raise StablefitInputError(
            "no target: pass y, or name the target column with target= (--target COL)"
        )
    if summary.n_rows == 0:
        raise StablefitInputError("the data has no rows: nothing to fit")
    for j in range(summary.p):
        if cols.count[j] and cols.max_abs[j] > LARGEST_USABLE:
            rows, total = _rows_beyond(source, j, LARGEST_USABLE)
            raise StablefitInputError(
                f"column '{names[j]}' holds {cols.max_abs[j]:.3g} at "
                f"{schema.format_rows(rows, total=total)}: its square overflows float64. Such "
                "a value is usually a sentinel or a parsing error; remove those rows or "
                "rescale the column."
            )
    for j in range(d):
        spread = cols.max[j] - cols.min[j]
        if 0 < spread < SMALLEST_SPREAD:
            raise StablefitInputError(
                f"column '{names[j]}' varies only by {spread:.3g}, within float64's subnormal "
                "range (fewer than 53 significant bits), where the solver cannot scale it. "
                "Multiply the column by a power of ten (e.g. 1e300) and divide its "
                "coefficient by the same."
            )
    spread, largest = cols.max[d] - cols.min[d], cols.max_abs[d]
    if 0 < spread < SMALLEST_SPREAD or 0 < largest < SMALLEST_SPREAD:
        # Its sums of squares would underflow to 0: "the target is 0", R² undefined.
        raise StablefitInputError(
            f"the target '{names[d]}' holds values no larger than {largest:.3g} varying by "
            f"{spread:.3g}, within float64's subnormal range (fewer than 53 significant "
            "bits), where its squares underflow to 0. Multiply the target by a power of ten "
            "(e.g. 1e300) and divide the coefficients by the same."
        )

    def non_finite(j: int) -> str:
        kinds = [
            f"{count} {kind} ({schema.format_rows(rows, total=int(count))})"
            for kind, count, rows in (
                ("NaN", cols.n_nan[j], cols.nan_rows[j]),
                ("inf", cols.n_inf[j], cols.inf_rows[j]),
            )
            if count
        ]
        return " and ".join(kinds)

    # Before the advice on missing values: no choice of missing= can help here.
    if cols.count[d] == 0:
        raise StablefitInputError(
            f"the target '{names[d]}' has no finite value ({non_finite(d)}): there is "
            "nothing to fit. Name the column to predict with target= (--target COL)."
        )
    bad = [j for j in range(summary.p) if cols.n_nan[j] or cols.n_inf[j]]
    if missing == "error" and bad:
        parts = [f"'{names[j]}' has {non_finite(j)}" for j in bad]
        empty = [names[j] for j in bad if j < d and cols.count[j] == 0]
        if empty:
            raise StablefitInputError(
                f"non-finite values: {'; '.join(parts)}. {_without_values(empty)}: "
                f"{_leave_out(empty, also='; open_source(..., exclude=[...])')}."
            )
        raise StablefitInputError(
            "non-finite values: "
            + "; ".join(parts)
            + ". Use missing='drop' (--missing drop) to leave those rows out, or "
            "missing='impute' to fill features with their column median."
        )
    usable = int(cols.count[d]) if missing == "impute" else summary.n_complete
    if usable < 2:
        empty = [names[j] for j in range(d) if cols.count[j] == 0]
        why = (
            f"; {_without_values(empty)}, so dropping rows with a missing value drops them "
            f"all: {_leave_out(empty)}"
            if empty and missing == "drop"
            else ""
        )
        raise StablefitInputError(
            f"only {usable} sample{'s' if usable != 1 else ''} (rows with finite values): "
            "a linear fit needs at least 2, and more rows than coefficients for standard "
            f"errors{why}"
        )


def _without_values(empty: Sequence[str]) -> str:
    """``'a' has no finite value at all`` for feature columns without any value."""
    return f"{quote_names(empty)} {'has' if len(empty) == 1 else 'have'} no finite value at all"


def _leave_out(empty: Sequence[str], also: str = "") -> str:
    """The fix for feature columns without any value: ``leave that column out (--exclude
    a)``, with ``also`` inside the parenthesis."""
    which = "that column" if len(empty) == 1 else "those columns"
    return f"leave {which} out (--exclude {','.join(empty)}{also})"


def _rows_beyond(source: Source, column: int, limit: float) -> tuple[list[int], int]:
    """First rows (0-based) where |value| > limit in a column, and how many there are."""
    task = partial(_rows_beyond_here, column=column, limit=limit)
    return over_partitions(source, task, _join_rows)


def _join_rows(a: tuple[list[int], int], b: tuple[list[int], int]) -> tuple[list[int], int]:
    return (a[0] + b[0])[:20], a[1] + b[1]


def _rows_beyond_here(source: Source, *, column: int, limit: float) -> tuple[list[int], int]:
    rows: list[int] = []
    total = 0
    for batch in source.batches():
        values = batch.X[:, column] if column < batch.X.shape[1] else batch.y
        hits = np.flatnonzero(np.abs(values) > limit)
        total += hits.size
        rows.extend((hits[: 20 - len(rows)] + batch.first_row).tolist())
    return rows, total


def _total_sum_of_squares(summary: Summary, intercept: bool, *, imputed: bool) -> float:
    d = summary.n_features
    if imputed:
        n, mean, m2 = summary.columns.count[d], summary.columns.mean[d], summary.columns.m2[d]
    else:
        n, mean, m2 = summary.n_complete, summary.complete_mean[d], summary.complete_m2[d]
    return float(m2) if intercept else float(m2 + n * mean**2)


# Collinear columns whose relation to the kept ones is worked out and named in a note.
LISTED_RELATIONS = 10


def _beyond_range_message(columns: list[str]) -> str:
    """A slope beyond float64's range has no value to report: the columns, and the fix."""
    which = ", ".join(repr(name) for name in columns[:LISTED_RELATIONS])
    return (
        f"the coefficient of {which} is beyond float64's range (above 1.8e308): the target "
        "varies on a far larger scale than that column. Rescale the column (multiply it by "
        "a power of ten) or the target, then fit again."
    )


def _solve(
    design: ScaledDesign,
    R: np.ndarray,
    *,
    names: Sequence[str],
    target_name: str,
    sst: float | None,
    missing: str = "error",
    n_imputed: int = 0,
    notes: list[str] | None = None,
    rows: int,
    start: np.ndarray | None = None,
    contraction_bound: float | None = None,
    sampled: SampledRows | None = None,
    inference: Inference | None = None,
    exact: bool = False,
) -> FitResult:
    """Leave out collinear columns, refine, and assemble the FitResult (with the residuals
    of the ``sampled`` rows).

    ``sst`` None: the (weighted) total sum of squares is gathered in the refinement pass.
    ``exact`` asks for refinement with exact residuals whatever the size of the data
    (small problems get it anyway).
    """
    inference = inference or Inference()
    given_blocks = design.blocks
    notes = list(notes or [])
    offset = int(design.intercept)
    dependent = [k for k in dependent_columns(R, tolerance=COLLINEAR_SINE) if k >= offset]
    kept = np.ones(R.shape[1], dtype=bool)
    kept[dependent] = False
    # Each relation is a least-squares solve: the first few say what is going on, and the
    # time stays proportional to the width when thousands of columns are collinear.
    dropped = tuple(
        DroppedFeature(
            names[k - offset],
            _relation(R, design, names, k, kept)
            if i < LISTED_RELATIONS
            else f"a combination of the columns kept before {names[k - offset]}",
        )
        for i, k in enumerate(dependent)
    )
    keep_features = np.flatnonzero(kept[offset:]).tolist()
    for feature, k in zip(dropped[:LISTED_RELATIONS], dependent, strict=False):
        notes.append(_dropped_note(feature, R, design, k, kept))
    if len(dropped) > LISTED_RELATIONS:
        notes.append(
            f"{len(dropped) - LISTED_RELATIONS:,} more columns are collinear to within "
            f"rounding with the ones kept and were left out too ({len(keep_features):,} kept, "
            f"{rows:,} rows): the JSON report (--json) names them all under dropped_features."
        )
    if dependent:
        design, R = _restrict(design, R, keep_features)
        if sampled is not None:
            Z_lo = None if sampled.Z_lo is None else sampled.Z_lo[:, keep_features]
            sampled = sampled._replace(Z_hi=sampled.Z_hi[:, keep_features], Z_lo=Z_lo)
    condition = condition_number(R)
    k_params = R.shape[1]
    want_gram = condition > GRAM_REFINEMENT_CONDITION and rows * k_params**2 <= GRAM_BUDGET
    weighted = inference.weights_name is not None

    def statistic(
        row_kinds: tuple[str, ...], n_ways: int, d: ScaledDesign, bread: Bread | None = None
    ) -> RowStatistic:
        return RowStatistic(
            d,
            R,
            row_kinds,
            n_ways,
            precise=want_gram,
            y_centre=inference.y_centre,
            cholesky=None if bread is None else bread.cholesky,
        )

    # The precise path's leverages need the Gram, which the first pass forms: its HC2 and
    # HC3 come from one more pass (a small problem: the Gram is formed only for those).
    row_kinds = ROW_MEATS.get(inference.cov_type, ())
    if want_gram and row_kinds:
        row_kinds = ("HC0",)
    needs_pass_statistic = weighted or inference.group_names or row_kinds
    try:
        refinement = refine(
            design,
            R,
            want_gram=want_gram,
            start=None if dependent else start,
            contraction_bound=None if dependent else contraction_bound,
            exact=exact or rows * k_params <= EXACT_PASS_VALUES,
            statistic=statistic(row_kinds, len(inference.group_names), design)
            if needs_pass_statistic
            else None,
        )
    except BeyondRange as beyond:
        kept = [names[j] for j in keep_features]
        raise StablefitInputError(
            _beyond_range_message([kept[j] for j in beyond.columns])
        ) from None
    n, k = refinement.n_obs, R.shape[1]
    if rows > n:
        one = rows - n == 1
        notes.insert(
            len(notes) - len(dropped),
            f"{rows - n} {'row' if one else 'rows'} with NaN or inf"
            + (" or a missing weight or cluster key" if weighted or inference.group_names else "")
            + f" {'was' if one else 'were'} left out (missing='{missing}').",
        )
    if condition > GRAM_REFINEMENT_CONDITION and refinement.gram is None:
        stderr_digits = max(0, int(-np.log10(8 * k_params * condition * UNIT_ROUNDOFF)))
        notes.append(
            f"Standard errors carry about {stderr_digits} significant digits: with "
            f"{rows} rows the double-double Gram matrix that would sharpen them "
            f"(condition number {condition:.3g}) was not formed."
        )
    elif refinement.gram is not None:
        # The covariance from the double-double Gram matrix keeps about κ²·u² of it.
        stderr_digits = int(-np.log10(condition**2 * UNIT_ROUNDOFF**2))
        if stderr_digits < FEW_DIGITS:
            notes.append(
                f"Standard errors carry about {max(0, stderr_digits)} significant digits or "
                "more: their covariance, from the double-double Gram matrix, loses digits "
                f"with the square of the condition number ({condition:.3g}); the "
                "coefficients' digits are the certificate's."
            )
    df_resid = n - k
    if df_resid <= 0:
        notes.append(
            f"{n} rows for {k} coefficients: the fit is exact and standard errors are "
            "undefined (NaN)."
        )
    kept_coef = refinement.params_hi[offset:]
    intercept_value = float(refinement.params_hi[0]) if offset else 0.0
    T = design.transform()
    sigma2 = refinement.sse / df_resid if df_resid > 0 else float("nan")
    weight_totals = refinement.statistics.weights if weighted else None
    if sst is None:
        assert weight_totals is not None
        sst = weight_totals.centered_tss() if offset else refinement.target_norm**2

    # What the result keeps refers to the design's scaling, not to the data it was read
    # from (which may be a cache of hundreds of MB); passes after the fit read again.
    detached = dataclasses.replace(design, blocks=None)
    later_blocks = inference.later_blocks or _own_blocks(given_blocks)

    def extra_pass(row_kinds: tuple[str, ...], keys: Any) -> tuple[RowStatistics, tuple[str, ...]]:
        blocks, group_names = later_blocks(keys)
        if dependent:
            blocks = blocks.then(KeptColumns(tuple(keep_features)))
        pass_design = dataclasses.replace(detached, blocks=blocks)
        gathered = statistics_pass(
            pass_design,
            refinement.params_hi,
            refinement.params_lo,
            statistic(row_kinds, len(group_names), pass_design, covariances.bread),
        )
        return gathered, group_names

    covariances = CovarianceBuilder(
        detached,
        Bread(R, refinement.gram),
        n,
        sigma2,
        refinement.statistics,
        inference.group_names,
        extra_pass,
    )
    covariance = covariances.covariance(inference.cov_type)

    certificate = _certificate(R, refinement, condition, T)
    kept_names = (["intercept"] if offset else []) + [names[j] for j in keep_features]
    notes.extend(_accuracy_notes(certificate, refinement, kept_names))
    if df_resid > 0 and np.sqrt(refinement.sse) <= UNIT_ROUNDOFF * refinement.target_norm:
        notes.append(
            "The residuals are zero to within the rounding of the target's values: the model "
            "fits the data exactly, so the standard errors are (nearly) 0 and the t "
            "statistics, p-values and intervals carry no information."
        )
    d = len(names)
    coef = np.zeros(d)
    coef[keep_features] = kept_coef
    full_cov = np.full((d + offset, d + offset), np.nan)
    kept = ([0] if offset else []) + [j + offset for j in keep_features]
    full_cov[np.ix_(kept, kept)] = covariance.matrix
    param_names = ("intercept",) * offset + tuple(names)
    notes += covariance_notes(covariance, inference.use_t, full_cov, param_names)
    if inference.group_names and covariance.cov_type != "cluster":
        notes.append(
            f"Cluster keys {quote_names(inference.group_names)} were given but are not used: "
            f"the covariance is {covariance.cov_type} (cov_type); get_robustcov('cluster') "
            "(on the command line, --cluster without --cov-type) gives clustered errors."
        )
    digits = np.zeros(d + offset, dtype=int)
    digits[kept] = certificate.digits_per_coef
    bounds = np.full(d + offset, np.nan)
    bounds[kept] = certificate.error_bounds
    # Per-coefficient digits for every feature: 0 for those left out (their bound NaN).
    certificate = dataclasses.replace(
        certificate,
        digits_per_coef=tuple(int(x) for x in digits),
        error_bounds=tuple(float(x) for x in bounds),
        zeros=tuple(kept[i] for i in certificate.zeros),
    )
    residuals = None
    if sampled is not None and sampled.y.size:
        residuals = residual_sample(
            design,
            R,
            refinement.params_hi,
            refinement.params_lo,
            sampled,
            resid_std=float(np.sqrt(sigma2)),
            n_obs=n,
        )
    return FitResult(
        feature_names=tuple(names),
        target_name=target_name,
        coef=coef,
        intercept=intercept_value,
        has_intercept=design.intercept,
        covariance=full_cov,
        n_obs=n,
        df_resid=df_resid,
        sse=refinement.sse,
        sst=sst,
        certificate=certificate,
        n_dropped_rows=rows - n,
        n_imputed_values=n_imputed,
        dropped=dropped,
        notes=number_notes(notes),
        cov_type=covariance.cov_type,
        use_t=inference.use_t,
        df_inference=covariance.df_inference,
        n_groups=covariance.n_groups,
        group_names=covariance.group_names,
        weights_name=inference.weights_name,
        sum_log_weights=0.0 if weight_totals is None else weight_totals.sum_log_w,
        _covariances=covariances,
        _prediction=PredictionBasis(
            shift=design.shift.copy(),
            centered_intercept=_centered_intercept(refinement, design),
            centered_covariance=covariance.centered,
            kept=np.array(keep_features, dtype=np.int64),
            has_intercept=design.intercept,
            scale=sigma2,
            df_resid=df_resid,
            use_t=inference.use_t,
            weights_name=inference.weights_name,
        ),
        residual_sample=residuals,
    )


def _own_blocks(blocks: Any) -> Callable[[Any], tuple[Any, tuple[str, ...]]]:
    """Passes after the fit over the fit's own blocks (which hold no cache), without
    cluster keys."""

    def later_blocks(keys: Any) -> tuple[Any, tuple[str, ...]]:
        if keys is not None:
            raise StablefitInputError(
                "other cluster keys need a fit by stablefit.fit (this one has no rows to "
                "match them with)"
            )
        return blocks, ()

    return later_blocks


def _centered_intercept(refinement: Refinement, design: ScaledDesign) -> float:
    """c + shift·b in double-double (0 without an intercept): the fit at the means."""
    if not design.intercept:
        return 0.0
    hi, lo = refinement.params_hi, refinement.params_lo
    products = dd_mul(design.shift, np.zeros_like(design.shift), hi[1:], lo[1:])
    total = dd_sum(np.append(products[0], hi[0]), np.append(products[1], lo[0]), axis=0)
    return float(total[0] + total[1])


def _restrict(
    design: ScaledDesign, R: np.ndarray, keep_features: list[int]
) -> tuple[ScaledDesign, np.ndarray]:
    offset = int(design.intercept)
    columns = list(range(offset)) + [j + offset for j in keep_features]

    R_kept = np.linalg.qr(R[:, columns], mode="r")[: len(columns)]
    R_kept = R_kept * np.where(np.diag(R_kept) < 0, -1.0, 1.0)[:, None]
    assert isinstance(design.blocks, SourceBlocks)
    restricted = ScaledDesign(
        design.blocks.then(KeptColumns(tuple(keep_features))),
        shift=design.shift[keep_features],
        scale=design.scale[keep_features],
        intercept=design.intercept,
    )
    return restricted, R_kept


@dataclass(frozen=True)
class KeptColumns:
    """A raw block restricted to some of its data columns."""

    columns: tuple[int, ...]

    def __call__(self, raw: RawBlock) -> RawBlock:
        block = RawBlock(*raw)
        keep = list(self.columns)
        Z_lo = None if block.Z_lo is None else block.Z_lo[:, keep]
        return block._replace(Z_hi=block.Z_hi[:, keep], Z_lo=Z_lo)


def _relation(
    R: np.ndarray, design: ScaledDesign, names: Sequence[str], k: int, kept: np.ndarray
) -> str:
    """'x2 = 1e+06·x1 + 0' — the column as a combination of the kept columns before it."""
    offset = int(design.intercept)
    before, Qt_col = _combination(R, k, kept)
    if not before:
        return f"{names[k - offset]} is zero"
    scale_k = design.scale[k - offset]
    terms, constant = [], design.shift[k - offset]
    for c, i in zip(Qt_col, before, strict=True):
        if i < offset:
            constant += c * scale_k
            continue
        factor = c * scale_k / design.scale[i - offset]
        constant -= factor * design.shift[i - offset]
        if abs(factor) > 1e-12 * max(1.0, np.max(np.abs(Qt_col))):
            terms.append(f"{factor:.6g}·{names[i - offset]}")
    if abs(constant) > 1e-9 * max(1.0, abs(design.shift[k - offset])):
        terms.append(f"{constant:.6g}")
    if not terms:
        return f"{names[k - offset]} = 0"
    # A negative term is subtracted: 'c = 2·a - 3·b', not 'c = 2·a + -3·b'.
    sum_text = terms[0] + "".join(
        f" - {term[1:]}" if term.startswith("-") else f" + {term}" for term in terms[1:]
    )
    return f"{names[k - offset]} = {sum_text}"


def _combination(R: np.ndarray, k: int, kept: np.ndarray) -> tuple[list[int], np.ndarray]:
    """The kept columns before column k of R, and the least-squares combination of them
    closest to it (in the scaled coordinates)."""
    before = np.flatnonzero(kept[:k]).tolist()
    if not before:
        return before, np.zeros(0)
    return before, np.linalg.lstsq(R[:, before], R[:, k], rcond=None)[0]


def _rounding_sine(R: np.ndarray, design: ScaledDesign, k: int, kept: np.ndarray) -> float:
    """The sine of column k's angle to the kept columns before it that the rounding of the
    values explains: each value x rounded by up to u·|x| moves the column and those it
    combines by at most u times their raw norms (in the scaled coordinates, where columns
    far from zero are centered: there the raw norms dwarf the centered ones)."""
    offset = int(design.intercept)
    raw_R = np.linalg.solve(design.transform().T, R.T).T
    raw_norms = np.linalg.norm(raw_R, axis=0) * np.diag(design.transform())
    if offset:
        raw_norms[0] = 0.0  # the intercept's column of ones is exact
    before, combination = _combination(R, k, kept)
    moved = raw_norms[k] + np.abs(combination) @ raw_norms[before]
    length = np.linalg.norm(R[:, k])
    # A column that is 0 once centered (a constant) is all rounding.
    return float(UNIT_ROUNDOFF * moved / length) if length else float("inf")


# A column whose sine is beyond this many times what rounding explains was left out though
# its values tell it from the others (the QR's own error is a few units of rounding).
ROUNDING_MARGIN = 16.0


def _dropped_note(
    feature: DroppedFeature, R: np.ndarray, design: ScaledDesign, k: int, kept: np.ndarray
) -> str:
    """Why a column was left out, with the sine of its angle to the columns before it; a
    sine beyond what the rounding of the values explains is said to be one, with how to fit
    the column (the certificate being that of the fit without it)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        sine = float(abs(R[k, k]) / np.linalg.norm(R[:, k]))
    rounding = _rounding_sine(R, design, k, kept)
    sine_text = f"{sine:.1e}" if sine else "0"
    if not sine > ROUNDING_MARGIN * rounding or " = " not in feature.relation:
        return (
            f"'{feature.name}' is collinear with the columns before it to within rounding "
            f"({feature.relation}; the sine of its angle to their span is {sine_text}, below "
            f"{COLLINEAR_SINE:.0e}): it was left out (coefficient 0, no standard error); its "
            "effect is carried by the others, and the certificate is that of the fit without it."
        )
    combination = feature.relation.split(" = ", 1)[1]
    return (
        f"'{feature.name}' is nearly collinear with the columns before it ({feature.relation}; "
        f"the sine of its angle to their span is {sine_text}, below {COLLINEAR_SINE:.0e}): it "
        "was left out (coefficient 0, no standard error), and the certificate is that of the "
        f"fit without it. The rounding of the values explains a sine of {rounding:.1e} at "
        f"most, so the exact fit that keeps '{feature.name}' is another one, with other "
        f"coefficients: to get it, replace '{feature.name}' by its difference from that "
        f"combination, {feature.name} - ({combination})."
    )


# Below this many trusted digits, a note says which coefficients and why.
FEW_DIGITS = 13


def _accuracy_notes(
    certificate: Certificate, refinement: Refinement, names: Sequence[str]
) -> list[str]:
    """Which coefficients carry fewer than FEW_DIGITS digits, and what limits them."""
    digits = np.array(certificate.digits_per_coef)
    few = [i for i in np.argsort(digits, kind="stable") if digits[i] < FEW_DIGITS]
    if not few:
        return []
    listed = ", ".join(_digits_of(names[i], certificate, i) for i in few[:5])
    more = f" and {len(few) - 5} more" if len(few) > 5 else ""
    condition = f"condition number {certificate.condition_number:.3g} after scaling"
    if not refinement.converged:
        why = (
            f"refinement stopped after {refinement.steps} passes without converging "
            f"({condition}); the digits are bounded by its last correction"
        )
    elif np.all(2 * refinement.noise_bound[few] >= refinement.error_bound[few]):
        why = (
            "their columns lie far from zero compared with their spread, and the "
            "rounding of the double-double residuals, which no further pass removes, "
            f"leaves no more for the data as given ({condition})"
        )
    else:
        why = condition
    return [f"Significant digits that can be trusted: {listed}{more}; {why}."]


def _digits_of(name: str, certificate: Certificate, i: int) -> str:
    """``name (digits)``, with the bound on its error when it cannot be told from zero: no
    digit of such a value is significant, but its size is known."""
    digits = certificate.digits_per_coef[i]
    if i in certificate.zeros:
        return f"{name} ({digits}: zero to within {certificate.error_bounds[i]:.1e})"
    return f"{name} ({digits})"


def _certificate(
    R: np.ndarray, refinement: Refinement, condition: float, T: np.ndarray
) -> Certificate:
    values = refinement.params_hi
    raw_R = np.linalg.solve(T.T, R.T).T
    # A coefficient that is exactly 0 has no relative error; its digits are counted
    # relative to the size at which it would explain the whole target, ‖y‖ / ‖A e_j‖
    # (none when both underflow to 0: then no digit is counted).
    with np.errstate(divide="ignore", invalid="ignore"):
        natural = refinement.target_norm / np.linalg.norm(raw_R, axis=0)
    kept = trusted_digits(np.where(values == 0, natural, values), refinement.error_bound)
    # At the returned solution Ãᵀr = -ÃᵀÃe, so ‖Ãᵀr‖ ≤ ‖R‖·‖R e‖. For a (nearly) exact
    # fit r is rounding noise; measure it against ‖y‖ instead.
    floor = UNIT_ROUNDOFF * refinement.target_norm
    denominator = refinement.design_norm * max(refinement.residual_norm, floor)
    gradient_bound = np.linalg.norm(R, 2) * refinement.energy_error
    backward = gradient_bound / denominator if denominator > 0 else 0.0
    return Certificate(
        condition_number=condition,
        condition_number_raw=condition_number(raw_R),
        backward_error=float(backward),
        digits=int(min(kept)) if kept else 0,
        digits_per_coef=kept,
        refinement_steps=refinement.steps,
        converged=refinement.converged,
        error_bounds=tuple(float(bound) for bound in refinement.error_bound),
        # Rounding noise where the value is 0: within its bound of 0, but not exactly 0
        # (an exact 0's digits are counted on the scale above, as for any coefficient).
        zeros=tuple(
            int(i)
            for i in np.flatnonzero((np.abs(values) <= refinement.error_bound) & (values != 0))
        ),
    )


def fit_polynomial(
    x: Any, y: Any, degree: int, *, intercept: bool = True, name: str = "x"
) -> FitResult:
    """Least-squares polynomial ``y = b0 + b1 x + ... + b_degree x^degree``.

    The powers of x are formed in double-double, so the design holds them exactly (to
    about 32 digits): a float64 table of powers is itself a perturbation of the problem
    that, for ill-conditioned polynomials such as NIST's Filip, limits any solver to about
    8 correct digits.

    Parameters
    ----------
    x, y : array-like of shape (n,)
    degree : int, at least 1
    intercept : bool, default True
    name : str, default "x"
        Feature names become ``x``, ``x^2``, ...

    Examples
    --------
    >>> import numpy as np, stablefit
    >>> x = np.arange(6.0)
    >>> result = stablefit.fit_polynomial(x, 1 + 2 * x + 3 * x**2, degree=2)
    >>> np.round(result.params, 9).tolist()
    [1.0, 2.0, 3.0]
    """
    if not isinstance(degree, int | np.integer) or degree < 1:
        raise StablefitInputError(f"degree must be a whole number >= 1, got {degree!r}")
    source = _polynomial_source(x, y)
    summary = summarize(source, detail=False)
    if summary.n_complete < summary.n_rows:
        cols = summary.columns
        rows = sorted({int(r) for rs in (*cols.nan_rows, *cols.inf_rows) for r in rs})
        where = source.schema.format_rows(rows, total=summary.n_rows - summary.n_complete)
        raise StablefitInputError(f"x or y is NaN or inf at {where}; remove those rows first")
    if summary.n_rows < 2:
        raise StablefitInputError(f"{summary.n_rows} rows: a polynomial fit needs at least 2")
    blocks = SourceBlocks(source, (PolynomialPowers(degree),))
    powers = blocks.map_reduce(_power_moments, CoMoments.merge, CoMoments.empty(degree))
    mean = powers.mean
    variance = np.diag(powers.comoment) / powers.n
    spread = np.sqrt(variance if intercept else variance + mean**2)
    design = ScaledDesign(
        blocks,
        shift=mean if intercept else np.zeros(degree),
        scale=power_of_two_scale(spread),
        intercept=intercept,
    )
    names = [name] + [f"{name}^{k}" for k in range(2, degree + 1)]
    sst = _total_sum_of_squares(summary, intercept, imputed=False)
    R, start = triangular_factor_qr(design)
    return _solve(
        design,
        R,
        names=names,
        target_name="y",
        sst=sst,
        rows=summary.n_rows,
        start=start,
        sampled=_sampled_rows(summary, PolynomialPowers(degree)),
    )


def _polynomial_source(x: Any, y: Any) -> Source:
    """x and y as one source of one feature: arrays, or Dask arrays on a cluster."""
    if is_dask_collection(x) or is_dask_collection(y):
        return open_source(x, y)
    x = float_array(x, "x")
    if x.ndim > 1 and x.size != x.shape[0]:  # (n, 1) is one column; (n, 2) was flattened
        raise StablefitInputError(
            f"x has shape {x.shape}; a polynomial is of one variable: pass one column "
            "(a 1-D array)."
        )
    return open_source(x.reshape(-1), y, feature_names=["x"])


@dataclass(frozen=True)
class PolynomialPowers:
    """A batch of (x, y) as the raw block of x, x², ..., x^degree, the powers formed in
    double-double (hi + lo)."""

    degree: int

    def __call__(self, batch: Batch) -> RawBlock:
        x = batch.X[:, 0]
        assert batch.y is not None
        powers_hi, powers_lo = [x], [np.zeros_like(x)]
        for _ in range(self.degree - 1):
            hi, lo = dd_mul(powers_hi[-1], powers_lo[-1], x, np.zeros_like(x))
            powers_hi.append(hi)
            powers_lo.append(lo)
        return np.column_stack(powers_hi), np.column_stack(powers_lo), batch.y


def _power_moments(raw: RawBlock) -> CoMoments:
    return CoMoments.of_block(raw[0])
