"""In-memory inputs: NumPy arrays, pandas and polars frames and series, Arrow tables.

pandas and polars are optional: an object is recognized as theirs only when the module
is already imported, so stablefit never imports them itself. Nothing the user passed is
written to: NumPy batches are read-only views, everything else is converted batch by
batch into new arrays.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from stablefit.errors import StablefitInputError
from stablefit.io.arrow import (
    ArrowTableSource,
    is_numeric_type,
    schema_of,
    select_arrow_columns,
    to_float64,
)
from stablefit.io.columns import (
    ColumnChoice,
    Selection,
    check_unique,
    missing_target_error,
    select_columns,
)
from stablefit.io.schema import ArraySource, Batch, Schema

# NumPy dtype kinds that are numbers: bool, signed and unsigned integers, floats.
NUMERIC_KINDS = "biuf"


def instance_of(obj: object, module: str, name: str) -> bool:
    """``isinstance(obj, module.name)`` without importing ``module``."""
    loaded = sys.modules.get(module)
    return loaded is not None and isinstance(obj, getattr(loaded, name))


def is_pandas(obj: object) -> bool:
    return instance_of(obj, "pandas", "DataFrame") or instance_of(obj, "pandas", "Series")


def is_polars(obj: object) -> bool:
    return instance_of(obj, "polars", "DataFrame") or instance_of(obj, "polars", "Series")


def is_dask_collection(obj: object) -> bool:
    """A Dask DataFrame, Series or Array (recognized without importing Dask)."""
    return any(
        instance_of(obj, module, name)
        for module, name in (
            ("dask.dataframe", "DataFrame"),
            ("dask.dataframe", "Series"),
            ("dask.array", "Array"),
        )
    )


def is_arrow(obj: object) -> bool:
    return isinstance(obj, pa.Table | pa.RecordBatch | pa.Array | pa.ChunkedArray)


def read_only(array: np.ndarray) -> np.ndarray:
    """A view that cannot be written through, so no later stage changes the user's data."""
    view = array.view()
    view.flags.writeable = False
    return view


def float_array(values: Any, what: str) -> np.ndarray:
    """A NumPy array-like as float64 (no copy when it already is), or a clear error."""
    array = np.asarray(values)
    kind = array.dtype.kind
    if kind in NUMERIC_KINDS:
        return array.astype(np.float64, copy=False)
    if kind == "O":
        try:
            return array.astype(np.float64)
        except (TypeError, ValueError):
            flat = array.reshape(-1)
            bad = next(i for i, v in enumerate(flat) if not _is_number(v))
            where = np.unravel_index(bad, array.shape)
            raise StablefitInputError(
                f"{what} holds a non-numeric value {flat[bad]!r} at index "
                f"{tuple(int(i) for i in where)}; convert it to a number (NaN for missing)."
            ) from None
    kinds = {"U": "text", "S": "bytes", "c": "complex numbers", "M": "dates", "m": "durations"}
    raise StablefitInputError(
        f"{what} holds {kinds.get(kind, str(array.dtype))} (dtype {array.dtype}); stablefit "
        "needs real numbers: convert it, e.g. with .astype(float)."
    )


def _is_number(value: object) -> bool:
    try:
        float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


# -- the target given as its own array ---------------------------------------------------


def target_values(y: Any, n_rows: int) -> tuple[np.ndarray, str]:
    """``y`` as a read-only float64 vector of length ``n_rows``, and its name."""
    name = "y"
    if isinstance(y, str):
        raise StablefitInputError(
            f"y={y!r} is a name, not the target's values: to fit X's column {y!r}, pass "
            f"target={y!r} instead."
        )
    if is_pandas(y) or is_polars(y):
        name = str(y.name) if getattr(y, "name", None) not in (None, "") else "y"
        if instance_of(y, "pandas", "DataFrame") or instance_of(y, "polars", "DataFrame"):
            if y.shape[1] != 1:
                raise StablefitInputError(
                    f"y is a DataFrame with {y.shape[1]} columns; pass one column as the target."
                )
            name = str(y.columns[0])
            y = y.iloc[:, 0] if is_pandas(y) else y.to_series()
    if is_polars(y) or is_arrow(y):
        arrow = y.to_arrow() if is_polars(y) else y
        if not is_numeric_type(arrow.type):
            raise StablefitInputError(
                f"the target {name!r} holds {arrow.type} values; it must be numeric."
            )
        values = to_float64(arrow)
    elif is_pandas(y):
        values = pandas_float64(y, f"the target {name!r}")
    else:
        values = float_array(y, "y")
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise StablefitInputError(
            f"y has shape {values.shape}; the target must be one value per row (a 1-D array)."
        )
    if values.shape[0] != n_rows:
        raise StablefitInputError(
            f"X has {n_rows} rows but y has {values.shape[0]}; they must describe the same rows."
        )
    return read_only(values), name


def check_target_args(y: Any, target: str | None) -> None:
    if y is not None and target is not None:
        raise StablefitInputError(
            f"both y and target={target!r} were given; pass the target either as a column "
            "name (target=) or as an array (y), not both."
        )


def check_rows(n_rows: int, origin: str) -> None:
    if n_rows == 0:
        raise StablefitInputError(f"{origin} has no rows; nothing to fit.")


# -- NumPy -------------------------------------------------------------------------------


def array_source(
    X: Any,
    y: Any,
    *,
    target: str | None,
    feature_names: Sequence[str] | None,
    batch_rows: int,
) -> ArraySource:
    """A 2-D array-like (or a 1-D one, as a single feature) with an optional target."""
    check_target_args(y, target)
    values = float_array(X, "X")
    if values.ndim == 1:
        values = values[:, np.newaxis]
    if values.ndim != 2:
        raise StablefitInputError(
            f"X has {values.ndim} dimensions (shape {values.shape}); pass a 2-D array of "
            "shape (rows, features), e.g. X.reshape(len(X), -1)."
        )
    check_rows(values.shape[0], "X")
    names = default_names(values.shape[1], feature_names)
    target_vector = None
    if target is not None:
        if feature_names is None:
            raise StablefitInputError(
                f"target={target!r} names a column, but X is an array without column names; "
                "pass the target as y, or name the columns with feature_names."
            )
        if target not in names:
            raise missing_target_error(target, names, "X")
        position = names.index(target)
        target_vector = read_only(values[:, position])
        values = np.delete(values, position, axis=1)
        names = names[:position] + names[position + 1 :]
    elif y is not None:
        target_vector, target = target_values(y, values.shape[0])
    if values.shape[1] == 0:
        raise StablefitInputError(
            f"X has no feature columns (shape {values.shape}); a fit needs at least one."
        )
    schema = Schema(feature_names=tuple(names), target_name=target, origin="array")
    return ArraySource(read_only(values), target_vector, schema, batch_rows)


def default_names(n_columns: int, feature_names: Sequence[str] | None) -> list[str]:
    if feature_names is None:
        return [f"x{j}" for j in range(n_columns)]
    if isinstance(feature_names, str):
        raise StablefitInputError(
            f"feature_names must be a sequence of names, not the string {feature_names!r}."
        )
    names = [str(name) for name in feature_names]
    if len(names) != n_columns:
        raise StablefitInputError(
            f"feature_names has {len(names)} names but X has {n_columns} columns; give one "
            "name per column."
        )
    check_unique(names, "feature_names")
    return names


# -- pandas ------------------------------------------------------------------------------


def pandas_is_numeric(series: Any) -> bool:
    import pandas as pd

    dtype = series.dtype
    if pd.api.types.is_complex_dtype(dtype):
        return False
    if pd.api.types.is_numeric_dtype(dtype):
        return True
    if pd.api.types.is_object_dtype(dtype):
        kind = pd.api.types.infer_dtype(series, skipna=True)
        return kind in ("integer", "floating", "mixed-integer-float", "boolean", "empty")
    return False


def pandas_float64(series: Any, what: str) -> np.ndarray:
    if not pandas_is_numeric(series):
        raise StablefitInputError(
            f"{what} is not numeric ({describe_pandas(series)}); convert it to numbers."
        )
    return series.to_numpy(dtype=np.float64, na_value=np.nan)


def describe_pandas(series: Any) -> str:
    """What a non-numeric pandas column holds: its dtype and a value that is not a number."""
    import pandas as pd

    kind = series.dtype
    if pd.api.types.is_datetime64_any_dtype(kind) or pd.api.types.is_timedelta64_dtype(kind):
        present = series.dropna()
        return f"dtype {kind}" + (f", e.g. {present.iloc[0]!s}" if len(present) else "")
    numbers = pd.to_numeric(series, errors="coerce").notna().to_numpy()
    bad = np.flatnonzero(series.notna().to_numpy() & ~numbers)
    if bad.size == 0:  # every value converts, but not every one is a number: '2', Decimal
        kinds = (int, float, bool, np.number, np.bool_)
        present = series.notna().to_numpy()
        row = next(
            (i for i, v in enumerate(series) if present[i] and not isinstance(v, kinds)), None
        )
        if row is None:
            return f"dtype {series.dtype}"
        value = series.iloc[row]
        return (
            f"dtype {series.dtype}, e.g. {value!r} ({type(value).__name__}) at row {row}; "
            "pandas.to_numeric converts it"
        )
    return f"dtype {series.dtype}, e.g. {series.iloc[bad[0]]!r} at row {bad[0]}"


@dataclass
class PandasSource:
    """A pandas DataFrame, converted to float64 one batch at a time."""

    columns: list[Any]
    target: Any | None
    y: np.ndarray | None
    schema: Schema
    batch_rows: int = 65536

    def batches(self) -> Iterator[Batch]:
        n_rows = len(self.columns[0])
        for start in range(0, n_rows, self.batch_rows):
            stop = min(start + self.batch_rows, n_rows)
            X = np.empty((stop - start, len(self.columns)))
            for j, column in enumerate(self.columns):
                X[:, j] = column.iloc[start:stop].to_numpy(dtype=np.float64, na_value=np.nan)
            if self.y is not None:
                y = self.y[start:stop]
            elif self.target is not None:
                y = self.target.iloc[start:stop].to_numpy(dtype=np.float64, na_value=np.nan)
            else:
                y = None
            yield Batch(X, y, start)


def pandas_source(
    frame: Any, y: Any, *, choice: ColumnChoice, batch_rows: int, origin: str = "DataFrame"
) -> PandasSource:
    """``origin`` names the frame in messages (a partition of a Dask DataFrame, say)."""
    check_target_args(y, choice.target)
    if instance_of(frame, "pandas", "Series"):
        frame = frame.to_frame(name="x0" if frame.name is None else frame.name)
    check_rows(len(frame), f"the {origin}")
    names = [str(name) for name in frame.columns]
    columns = [frame.iloc[:, p] for p in range(frame.shape[1])]
    selection = select_columns(
        names,
        [pandas_is_numeric(column) for column in columns],
        choice,
        origin=origin,
        describe=lambda p: describe_pandas(columns[p]),
    )
    if is_pandas(y):
        check_same_index(frame, y)
    y_values, target_name = (None, choice.target) if y is None else target_values(y, len(frame))
    return PandasSource(
        columns=[columns[p] for p in selection.feature_positions],
        target=None if selection.target_position is None else columns[selection.target_position],
        y=y_values,
        schema=schema_with_target(selection, "pandas DataFrame", target_name),
        batch_rows=batch_rows,
    )


def check_same_index(frame: Any, y: Any) -> None:
    """Refuse an X and a y from pandas whose rows carry different labels: rows are paired
    by position, so a y sorted, sampled or filtered apart from X would be paired with the
    wrong rows, silently (statsmodels refuses them too)."""
    if len(frame) != len(y) or frame.index.equals(y.index):
        return
    ours, theirs = frame.index.tolist(), y.index.tolist()
    first = next((p for p, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b), 0)
    raise StablefitInputError(
        f"X and y have different row labels (index; at position {first}, X has "
        f"{ours[first]!r} and y {theirs[first]!r}): rows are paired by position, "
        "which would pair rows of different labels. Align them (y.loc[X.index]), or pass "
        "y.to_numpy() if the positions correspond."
    )


def schema_with_target(selection: Selection, origin: str, target_name: str | None) -> Schema:
    schema = schema_of(selection, origin)
    if target_name == schema.target_name:
        return schema
    return Schema(
        feature_names=schema.feature_names,
        target_name=target_name,
        dropped=schema.dropped,
        origin=origin,
    )


# -- Arrow and polars ----------------------------------------------------------------------


def arrow_table(data: Any) -> tuple[pa.Table, str]:
    """An Arrow table for Arrow and polars inputs (polars converts without copying)."""
    if instance_of(data, "polars", "Series"):
        data = data.rename(data.name or "x0").to_frame()
    if instance_of(data, "polars", "DataFrame"):
        return data.to_arrow(), "polars DataFrame"
    if isinstance(data, pa.Array | pa.ChunkedArray):
        return pa.table({"x0": data}), "Arrow array"
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data]), "Arrow RecordBatch"
    return data, "Arrow Table"


def table_source(data: Any, y: Any, *, choice: ColumnChoice, batch_rows: int) -> ArrowTableSource:
    check_target_args(y, choice.target)
    table, origin = arrow_table(data)
    check_rows(table.num_rows, f"the {origin}")
    selection = select_arrow_columns(table.schema, table, choice, origin=origin)
    y_values, target_name = (None, choice.target) if y is None else target_values(y, table.num_rows)
    return ArrowTableSource(
        table=table,
        selection=selection,
        schema=schema_with_target(selection, origin, target_name),
        y=y_values,
        batch_rows=batch_rows,
    )
