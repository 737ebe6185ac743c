"""Arrow columns -> float64: the conversion shared by files, Arrow tables and polars frames.

Conversion is vectorized (Arrow compute casts and ``to_numpy``): no Python per row. Nulls
become NaN and infinities stay infinite, so later stages see and report them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from stablefit.io.columns import ColumnChoice, Selection, select_columns
from stablefit.io.schema import Batch, Schema

ArrowColumn = pa.Array | pa.ChunkedArray

# Cells that read as a number or a boolean; used only to pick an example for messages.
NUMBER_OR_BOOLEAN = r"^\s*([+-]?((\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|inf(inity)?|nan)|true|false)\s*$"


def is_numeric_type(arrow_type: pa.DataType) -> bool:
    """Integers, floats, decimals and booleans are numbers; an all-null column is too."""
    if pa.types.is_dictionary(arrow_type):
        return is_numeric_type(arrow_type.value_type)
    return (
        pa.types.is_integer(arrow_type)
        or pa.types.is_floating(arrow_type)
        or pa.types.is_decimal(arrow_type)
        or pa.types.is_boolean(arrow_type)
        or pa.types.is_null(arrow_type)
    )


def to_float64(column: ArrowColumn) -> np.ndarray:
    """A numeric Arrow column as a float64 array, nulls as NaN.

    Integers beyond 2**53 are rounded to the nearest double rather than refused: the
    Summary flags such columns, and refusing them here would hide where they are.
    """
    if column.type != pa.float64():
        column = column.cast(pa.float64(), safe=False)
    return column.to_numpy(zero_copy_only=False)


def first_unparsable(
    column: ArrowColumn, to_type: pa.DataType | None = None
) -> tuple[int, str] | None:
    """Position and text of the first non-null value that does not convert, if any.

    ``to_type`` is float64 unless given (a CSV column read as booleans converts to bool).

    Used only to word error messages: a binary search over prefixes with vectorized
    casts, so even a long column costs a few casts.
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        column = column.cast(pa.string())

    def parses(stop: int) -> bool:
        try:
            column.slice(0, stop).cast(to_type or pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return False
        return True

    if parses(len(column)):
        return None
    low, high = 0, len(column)  # the prefix of length `low` parses, that of `high` does not
    while high - low > 1:
        middle = (low + high) // 2
        if parses(middle):
            low = middle
        else:
            high = middle
    return high - 1, str(shown(column[high - 1]))


def describe_column(column: ArrowColumn, label: str = "row", offset: int = 0) -> str:
    """What a non-numeric column holds, for messages: ``"text such as 'abc' (line 3)"``."""
    arrow_type = column.type
    if pa.types.is_dictionary(arrow_type):  # a pandas category column, say
        arrow_type = arrow_type.value_type
        column = column.cast(arrow_type)
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        import pyarrow.compute as pc  # only to describe text: reading numbers needs none of it

        readable = pc.match_substring_regex(column, NUMBER_OR_BOOLEAN, ignore_case=True)
        text = pc.fill_null(pc.invert(readable), False)
        if isinstance(text, pa.ChunkedArray):
            text = text.combine_chunks()
        positions = np.flatnonzero(text.to_numpy(zero_copy_only=False))
        if positions.size == 0:  # every cell a number or a boolean: a mix of the two
            mixed = _minority_kind(column, pc)
            if mixed is not None:
                position, value, kind = mixed
                return f"{kind} such as {value!r} at {label} {position + offset}"
        found = first_unparsable(column) if positions.size == 0 else None
        if positions.size:
            found = int(positions[0]), shown(column[int(positions[0])])
        if found is not None:
            position, value = found
            where = f"at {label} {position + offset}"
            if isinstance(value, bytes):
                return f"text that is not UTF-8 such as {value!r} {where} (save the file as UTF-8)"
            return f"text such as {value!r} {where}"
        return "text"
    values = column.drop_null()
    example = f" such as {shown(values[0])!s}" if len(values) else ""
    if pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type):
        return f"text that is not UTF-8{example} (save the file as UTF-8)"
    return f"{arrow_type} values{example}"


def shown(value: pa.Scalar) -> object:
    """A value for a message: as Python has it, or, where Python cannot (text that is not
    UTF-8, a timestamp beyond year 9999), its bytes or its integer."""
    try:
        return value.as_py()
    except (UnicodeDecodeError, OverflowError, ValueError):
        if pa.types.is_string(value.type) or pa.types.is_large_string(value.type):
            return value.cast(pa.binary()).as_py()
        if pa.types.is_temporal(value.type):
            return value.cast(pa.int64()).as_py()
        raise


def _minority_kind(column: ArrowColumn, pc: object) -> tuple[int, str, str] | None:
    """In a column of true/false and numbers, the first cell of the rarer kind."""
    boolean = pc.match_substring_regex(column, r"^\s*(true|false)\s*$", ignore_case=True)  # type: ignore[attr-defined]
    flags = pc.fill_null(boolean, False).to_numpy(zero_copy_only=False)  # type: ignore[attr-defined]
    present = column.is_valid().to_numpy(zero_copy_only=False)
    booleans, numbers = flags & present, ~flags & present
    if not booleans.any() or not numbers.any():
        return None
    rare, kind = (
        (numbers, "numbers among true/false values")
        if booleans.sum() >= numbers.sum()
        else (booleans, "true/false among numbers")
    )
    position = int(np.flatnonzero(rare)[0])
    return position, str(column[position].as_py()), kind


def select_arrow_columns(
    schema: pa.Schema,
    sample: pa.RecordBatch | pa.Table,
    choice: ColumnChoice,
    *,
    origin: str,
    row_label: str = "row",
    row_offset: int = 0,
) -> Selection:
    """:func:`select_columns` for an Arrow schema, describing columns from ``sample``."""
    names = [str(name) for name in schema.names]
    return select_columns(
        names,
        [is_numeric_type(field.type) for field in schema],
        choice,
        origin=origin,
        describe=lambda p: describe_column(sample.column(p), row_label, row_offset),
    )


def batch_from_arrow(
    columns: list[ArrowColumn], target: ArrowColumn | None, first_row: int
) -> Batch:
    """One :class:`Batch` from Arrow feature columns (in order) and the target column."""
    n_rows = len(columns[0])
    X = np.empty((n_rows, len(columns)))
    for j, column in enumerate(columns):
        X[:, j] = to_float64(column)
    y = None if target is None else to_float64(target)
    return Batch(X, y, first_row)


def schema_of(selection: Selection, origin: str, **rows: object) -> Schema:
    """The :class:`Schema` of a selection; ``rows`` sets ``row_label``/``row_offset``."""
    return Schema(
        feature_names=selection.feature_names,
        target_name=selection.target_name,
        dropped=selection.dropped,
        origin=origin,
        **rows,  # type: ignore[arg-type]
    )


@dataclass
class ArrowTableSource:
    """An in-memory Arrow table (or polars frame), converted to float64 batch by batch.

    Only one batch of float64 values exists at a time, so a large table is not copied.
    ``y``, when given, is the target as a float64 array aligned with the table's rows.
    """

    table: pa.Table
    selection: Selection
    schema: Schema
    y: np.ndarray | None = None
    batch_rows: int = 65536

    def batches(self) -> Iterator[Batch]:
        n_rows = self.table.num_rows
        features = [self.table.column(p) for p in self.selection.feature_positions]
        position = self.selection.target_position
        target = None if position is None else self.table.column(position)
        for start in range(0, n_rows, self.batch_rows):
            length = min(self.batch_rows, n_rows - start)
            batch = batch_from_arrow(
                [column.slice(start, length) for column in features],
                None if target is None else target.slice(start, length),
                start,
            )
            if self.y is not None:
                batch = Batch(batch.X, self.y[start : start + length], start)
            yield batch
