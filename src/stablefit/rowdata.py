"""Each row's weight and cluster keys: taken from arrays or named columns, checked, and
served beside the feature batches.

Weights and keys are not features: they come from their own arrays, or from columns of
the same file or table that are left out of the features (:mod:`stablefit.io.side`).
Cluster keys of any type (numbers, text, categories) become codes 0, 1, ... in order of
first appearance; the code book holds one entry per cluster, so memory grows with the
number of clusters, not of rows. A file's columns are read as a stream, and the converted
values kept for later passes while they fit a budget.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from stablefit.errors import StablefitInputError
from stablefit.io import Batch, Schema, Source
from stablefit.io.arrow import is_numeric_type, to_float64
from stablefit.io.cache import DEFAULT_CACHE_BYTES
from stablefit.io.memory import float_array, is_arrow, is_pandas, is_polars
from stablefit.io.schema import rows_present
from stablefit.io.side import Column, side_columns

# Rows listed in a message, and the most a check remembers.
LISTED_ROWS = 20
MAX_CLUSTERS = 2**31 - 1


@dataclass
class KeyEncoder:
    """Cluster keys -> codes 0, 1, ... in order of first appearance (-1: missing key)."""

    codes: dict[Any, int] = field(default_factory=dict)

    def encode(self, column: Column) -> np.ndarray:
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        if isinstance(column, pa.Array):
            if pa.types.is_dictionary(column.type):
                column = column.cast(column.type.value_type)
            encoded = column.dictionary_encode()
            values = encoded.dictionary.to_pylist()
            indices = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False)
        else:
            values, indices = _unique_values(np.asarray(column))
        mapping = np.array([self._code(value) for value in values] + [-1], dtype=np.int64)
        return mapping[np.asarray(indices, dtype=np.int64)]

    def _code(self, value: Any) -> int:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return -1
        if isinstance(value, np.generic):
            value = value.item()
        code = self.codes.setdefault(value, len(self.codes))
        if code >= MAX_CLUSTERS:
            raise StablefitInputError(f"more than {MAX_CLUSTERS} clusters: cannot cluster on that")
        return code


def _unique_values(values: np.ndarray) -> tuple[list[Any], np.ndarray]:
    """Distinct values and each row's index among them (-1 for None/NaN)."""
    if values.ndim != 1:
        raise StablefitInputError(
            f"cluster keys must be one value per row, got shape {values.shape}"
        )
    if values.dtype.kind == "O":
        try:
            import pandas as pd
        except ImportError:  # pandas is optional; NumPy sorts objects of one type
            pd = None
        if pd is not None:
            indices, uniques = pd.factorize(values, use_na_sentinel=True)
            return list(uniques), indices
        missing = np.array([v is None or (isinstance(v, float) and np.isnan(v)) for v in values])
        try:
            uniques, indices = np.unique(values[~missing], return_inverse=True)
        except TypeError:
            raise StablefitInputError(
                "cluster keys mix types that cannot be compared (such as numbers and text); "
                "convert them to one type"
            ) from None
        full = np.full(values.size, -1, dtype=np.int64)
        full[~missing] = indices
        return list(uniques), full
    uniques, indices = np.unique(values, return_inverse=True)
    return list(uniques), indices.reshape(-1)


@dataclass(frozen=True)
class RowChunk:
    """Weights (NaN where missing) and cluster codes (rows × ways, -1 where missing) of
    consecutive rows from ``first_row``."""

    first_row: int
    weights: np.ndarray | None
    codes: np.ndarray | None

    @property
    def n_rows(self) -> int:
        part = self.weights if self.weights is not None else self.codes
        assert part is not None
        return part.shape[0]

    def rows(self, start: int, stop: int) -> RowChunk:
        return RowChunk(
            self.first_row + start,
            None if self.weights is None else self.weights[start:stop],
            None if self.codes is None else self.codes[start:stop],
        )

    def usable(self) -> np.ndarray:
        """Rows whose weight and keys are all present."""
        return rows_present(self.n_rows, self.weights, self.codes)


@dataclass
class RowData:
    """The weights and cluster codes of a source's rows, pass by pass.

    ``weights_name`` and ``group_names`` say where they came from (a column name, or
    ``"weights"``/``"groups"`` for arrays); ``n_ways`` is the number of clusterings.
    """

    weights_name: str | None
    group_names: tuple[str, ...]
    read_chunks: Callable[[], Iterator[RowChunk]]
    budget_bytes: int = DEFAULT_CACHE_BYTES
    _cached: list[RowChunk] | None = field(default=None, init=False, repr=False)

    def uncached(self) -> RowData:
        """The same rows, read again on every pass instead of kept."""
        return RowData(self.weights_name, self.group_names, self.read_chunks, budget_bytes=0)

    @property
    def n_ways(self) -> int:
        return len(self.group_names)

    @property
    def weighted(self) -> bool:
        return self.weights_name is not None

    def chunks(self) -> Iterator[RowChunk]:
        if self._cached is not None:
            yield from self._cached
            return
        kept: list[RowChunk] | None = []
        size = 0
        for chunk in self.read_chunks():
            if kept is not None:
                size += sum(p.nbytes for p in (chunk.weights, chunk.codes) if p is not None)
                if size <= self.budget_bytes:
                    kept.append(chunk)
                else:
                    kept = None
            yield chunk
        self._cached = kept

    def aligned(self, batches: Iterator[Batch]) -> Iterator[tuple[Batch, RowChunk]]:
        """Each batch with the weights and codes of its rows."""
        chunks = self.chunks()
        current: RowChunk | None = None
        offset = 0
        for batch in batches:
            pieces = []
            needed = batch.n_rows
            while needed:
                if current is None or offset == current.n_rows:
                    current, offset = next(chunks, None), 0
                    if current is None:
                        rows_read = batch.first_row + batch.n_rows - needed
                        raise self._length_error(f"{rows_read} rows, fewer than the data")
                take = min(needed, current.n_rows - offset)
                pieces.append(current.rows(offset, offset + take))
                offset += take
                needed -= take
            yield batch, _joined(pieces, batch.first_row)
        if (current is not None and offset < current.n_rows) or next(chunks, None) is not None:
            raise self._length_error("more rows than the data")

    def _length_error(self, what: str) -> StablefitInputError:
        names = [n for n in (self.weights_name, *self.group_names) if n is not None]
        return StablefitInputError(
            f"{' and '.join(map(repr, names))} {'has' if len(names) == 1 else 'have'} {what}: "
            "weights and cluster keys need one value per row of the data."
        )

    def check(self, schema: Schema, missing: str, largest_value: float = 0.0) -> int:
        """Refuse weights that are zero, negative or infinite, naming rows, or so large that
        their products with the data's ``largest_value`` overflow what the solver squares;
        count rows with a missing weight or key, refused when ``missing="error"``. Returns
        that count."""
        bad: list[int] = []
        n_bad = 0
        absent: list[int] = []
        n_absent = 0
        heaviest, heaviest_row = 0.0, 0
        for chunk in self.chunks():
            if chunk.weights is not None:
                with np.errstate(invalid="ignore"):
                    rows = np.flatnonzero(~(chunk.weights > 0) & ~np.isnan(chunk.weights))
                rows = np.union1d(rows, np.flatnonzero(np.isinf(chunk.weights)))
                n_bad += rows.size
                bad.extend((rows[: LISTED_ROWS - len(bad)] + chunk.first_row).tolist())
                finite = np.where(np.isfinite(chunk.weights), chunk.weights, 0.0)
                if finite.size and finite.max() > heaviest:
                    heaviest, heaviest_row = finite.max(), chunk.first_row + finite.argmax()
            rows = np.flatnonzero(~chunk.usable())
            n_absent += rows.size
            absent.extend((rows[: LISTED_ROWS - len(absent)] + chunk.first_row).tolist())
        if n_bad:
            raise StablefitInputError(
                f"weights {self.weights_name!r} must be positive and finite; {n_bad} are not "
                f"({schema.format_rows(bad, total=n_bad)}). Remove those rows (a zero weight "
                "would leave a row out) or correct the weights."
            )
        if heaviest * largest_value > LARGEST_WEIGHTED:
            raise StablefitInputError(
                f"weights {self.weights_name!r} reach {heaviest:.3g} "
                f"({schema.format_rows([heaviest_row], total=1)}) and the data "
                f"{largest_value:.3g}: their products, beyond {LARGEST_WEIGHTED:.0e}, overflow "
                "float64 when squared. Divide the weights by a power of ten: the coefficients, "
                "standard errors and tests do not change."
            )
        if n_absent and missing == "error":
            names = " or ".join(repr(n) for n in (self.weights_name, *self.group_names) if n)
            raise StablefitInputError(
                f"{n_absent} rows have no value for {names} "
                f"({schema.format_rows(absent, total=n_absent)}). Use missing='drop' "
                "(--missing drop) to leave those rows out, or fill them in."
            )
        return n_absent


@dataclass
class WithRows:
    """A source whose batches carry their rows' weights and cluster codes (from ``rows``;
    the codes from ``keys`` instead when given, for another clustering of the same rows).
    Without either it is the source itself, pass for pass."""

    source: Source
    rows: RowData | None
    keys: RowData | None = None

    @property
    def schema(self) -> Schema:
        return self.source.schema

    def batches(self) -> Iterator[Batch]:
        batches = self.source.batches()
        if self.rows is not None:
            batches = (
                dataclasses.replace(batch, weights=chunk.weights, groups=chunk.codes)
                for batch, chunk in self.rows.aligned(batches)
            )
        if self.keys is not None:
            batches = (
                dataclasses.replace(batch, groups=chunk.codes)
                for batch, chunk in self.keys.aligned(batches)
            )
        yield from batches


def with_rows(source: Source, rows: RowData | None, keys: RowData | None = None) -> Source:
    """``source`` with weights and cluster codes attached (:class:`WithRows`); the source
    itself when there are none, so that a partitioned source stays one (its passes then
    run where its partitions are read)."""
    return source if rows is None and keys is None else WithRows(source, rows, keys)


def _joined(pieces: list[RowChunk], first_row: int) -> RowChunk:
    if len(pieces) == 1:
        return pieces[0]
    weights = None if pieces[0].weights is None else np.concatenate([p.weights for p in pieces])
    codes = None if pieces[0].codes is None else np.concatenate([p.codes for p in pieces])
    return RowChunk(first_row, weights, codes)


# -- from what the user passed -----------------------------------------------------------


def column_names(data: Any, weights: Any, groups: Any) -> tuple[str | None, tuple[str, ...]]:
    """The column names among ``weights`` and ``groups`` (which may be arrays instead)."""
    named = (
        isinstance(data, str | os.PathLike) or is_pandas(data) or is_polars(data) or is_arrow(data)
    )
    weights_name = weights if isinstance(weights, str) else None
    if isinstance(groups, str):
        group_names: tuple[str, ...] = (groups,)
    elif (
        named
        and isinstance(groups, list | tuple)
        and 1 <= len(groups) <= 2
        and all(isinstance(g, str) for g in groups)
    ):
        group_names = tuple(groups)
    else:
        group_names = ()
    if (weights_name or group_names) and not named:
        raise StablefitInputError(
            "weights= and groups= name columns only of files and tables; for arrays, pass "
            "the weights and cluster keys as arrays with one value per row"
        )
    return weights_name, group_names


# Weighted values w·v beyond this have squares beyond float64's range (as values beyond
# 1e150 have, which the fit refuses).
LARGEST_WEIGHTED = 1e150


def refuse_the_target(
    target: str | None, weights_name: str | None, group_names: Sequence[str]
) -> None:
    """Refuse a weights or cluster column that is the target column (which would be taken
    out of the fit's features with a warning and then weight or cluster it by itself)."""
    named = [("weights", "weights=", "--weights", weights_name)]
    named += [("cluster", "groups=", "--cluster", name) for name in group_names]
    for role, keyword, flag, name in named:
        if name is not None and name == target:
            raise StablefitInputError(
                f"the {role} column {name!r} is the target: name another column with "
                f"{keyword} ({flag} COL), or another target"
            )


def row_data(data: Any, weights: Any, groups: Any, n_rows: int | None) -> RowData | None:
    """Weights and cluster keys from arrays or column names of ``data``; None when neither
    was given. ``n_rows`` is the data's row count when known (arrays and tables)."""
    if weights is None and groups is None:
        return None
    weights_name, group_names = column_names(data, weights, groups)
    named = [n for n in (weights_name, *group_names) if n is not None]
    if len(set(named)) < len(named):
        twice = next(name for name in named if named.count(name) > 1)
        raise StablefitInputError(
            f"{twice!r} is named twice among the weights and cluster keys: a column serves "
            "once, as the weights (weights=, --weights) or as cluster keys (groups=, --cluster)"
        )
    weight_values = None
    if weights is not None and weights_name is None:
        weight_values = _weight_array(weights, n_rows)
    codes = None
    if groups is not None and not group_names:
        key_columns = _key_arrays(groups, n_rows)
        codes = np.column_stack([KeyEncoder().encode(column) for column in key_columns])
        group_names = ("groups",) if len(key_columns) == 1 else ("groups[0]", "groups[1]")
    encoders = [KeyEncoder() for _ in group_names] if codes is None else []

    def read_chunks() -> Iterator[RowChunk]:
        if not named:
            yield RowChunk(0, weight_values, codes)
            return
        side = side_columns(data, named, numeric=[weights_name] if weights_name else [])
        first = 0
        for columns in side.chunks():
            by_name = dict(zip(side.names, columns, strict=True))
            n = len(columns[0])
            chunk = RowChunk(0, weight_values, codes).rows(first, first + n)
            chunk_weights, chunk_codes = chunk.weights, chunk.codes
            for given in (chunk_weights, chunk_codes):
                if given is not None and given.shape[0] < n:
                    raise StablefitInputError(
                        f"weights or groups have fewer values than {side.origin} has rows"
                    )
            if weights_name is not None:
                chunk_weights = _weight_column(by_name[weights_name], weights_name)
            if encoders:
                chunk_codes = np.column_stack(
                    [e.encode(by_name[name]) for e, name in zip(encoders, group_names, strict=True)]
                )
            yield RowChunk(first, chunk_weights, chunk_codes)
            first += n

    return RowData(
        weights_name=weights_name or ("weights" if weights is not None else None),
        group_names=group_names,
        read_chunks=read_chunks,
    )


def _weight_array(weights: Any, n_rows: int | None) -> np.ndarray:
    if is_pandas(weights):
        values = np.asarray(weights.to_numpy(dtype=np.float64, na_value=np.nan))
    elif is_polars(weights) or is_arrow(weights):
        values = to_float64(weights.to_arrow() if is_polars(weights) else weights)
    else:
        values = float_array(weights, "weights")
    values = values.reshape(-1) if values.ndim == 2 and 1 in values.shape else values
    if values.ndim != 1:
        raise StablefitInputError(f"weights must be one value per row, got shape {values.shape}")
    _check_length(values.shape[0], n_rows, "weights")
    return values


def _weight_column(column: Column, name: str) -> np.ndarray:
    if isinstance(column, np.ndarray):
        return float_array(column, f"weights column {name!r}")
    if not is_numeric_type(column.type):
        raise StablefitInputError(
            f"weights column {name!r} holds {column.type} values; weights must be numbers"
        )
    return to_float64(column)


def _key_arrays(groups: Any, n_rows: int | None) -> list[Column]:
    """One or two arrays of cluster keys from what was passed as ``groups``."""
    if is_pandas(groups):
        if groups.ndim == 1:
            columns: list[Column] = [groups.to_numpy()]
        else:
            columns = [groups.iloc[:, j].to_numpy() for j in range(groups.shape[1])]
    elif is_polars(groups) or is_arrow(groups):
        if isinstance(groups, pa.Array | pa.ChunkedArray) or getattr(groups, "ndim", 2) == 1:
            columns = [groups.to_arrow() if is_polars(groups) else groups]
        else:
            table = groups.to_arrow() if is_polars(groups) else groups
            columns = [table.column(j) for j in range(table.num_columns)]
    elif isinstance(groups, list | tuple) and groups and not np.isscalar(groups[0]):
        columns = [np.asarray(column) for column in groups]
    else:
        array = np.asarray(groups)
        if array.ndim == 1:
            columns = [array]
        elif array.ndim == 2 and array.shape[1] in (1, 2):
            columns = [array[:, j] for j in range(array.shape[1])]
        else:
            raise StablefitInputError(
                f"groups has shape {array.shape}; pass one or two columns of cluster keys, "
                "one row per row of the data"
            )
    if not 1 <= len(columns) <= 2:
        raise StablefitInputError(
            f"groups has {len(columns)} columns; clustering takes one or two ways"
        )
    for column in columns:
        _check_length(len(column), n_rows, "groups")
    return columns


def _check_length(length: int, n_rows: int | None, what: str) -> None:
    if n_rows is not None and length != n_rows:
        raise StablefitInputError(
            f"{what} has {length} values but the data has {n_rows} rows: one per row is needed"
        )
