"""Named columns read on their own, in row order: the weights and cluster keys of a fit.

They are not features: a cluster key may be text (a firm's name) and a weight must not be
scaled or centered like a feature. Each pass yields the columns chunk by chunk in the
rows' order, as Arrow arrays (files, Arrow and polars tables) or NumPy arrays (pandas), so
that the caller can align them with the feature batches by row number. Files are read as
a stream: memory does not grow with the file.

In a CSV file a cluster key is read as the text the file holds (``"1935"`` and
``"1935.0"`` are different keys) and a weight as a number; blank lines are rows of missing
values, as for the features, so rows stay aligned.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from stablefit.errors import StablefitInputError
from stablefit.io.columns import check_unique, missing_columns_error
from stablefit.io.csv import FIRST_DATA_LINE, parse_options
from stablefit.io.formats import file_format
from stablefit.io.memory import arrow_table, is_arrow, is_pandas, is_polars

Column = pa.Array | pa.ChunkedArray | np.ndarray

# Bytes per block of the streaming CSV reader, rows per batch of a binary file.
SIDE_BLOCK_BYTES = 4 << 20
SIDE_BATCH_ROWS = 65536


@dataclass(frozen=True)
class SideColumns:
    """Named columns of a file or table, read pass by pass in row order.

    ``numeric`` names the columns that must hold numbers (weights); the others are keys
    of any type. ``chunks()`` starts a new pass: lists of columns (in ``names`` order) for
    consecutive rows. ``row_label`` and ``row_offset`` name rows as the feature source does.
    """

    names: tuple[str, ...]
    origin: str
    chunks: Callable[[], Iterator[list[Column]]]
    row_label: str = "row"
    row_offset: int = 0


def side_columns(data: Any, names: Sequence[str], *, numeric: Sequence[str] = ()) -> SideColumns:
    """The columns ``names`` of a file, DataFrame or Arrow table.

    Raises
    ------
    StablefitInputError
        An input without named columns (a NumPy array), a missing column, or (in a file) a
        value of a ``numeric`` column that is not a number, naming its line.
    """
    names = tuple(str(name) for name in names)
    if isinstance(data, str | os.PathLike):
        return _file_columns(Path(data), names, tuple(numeric))
    if is_pandas(data):
        frame = data.to_frame() if data.ndim == 1 else data
        available = [str(c) for c in frame.columns]
        _check_present(names, available, "DataFrame")
        positions = [available.index(name) for name in names]
        columns = [frame.iloc[:, p].to_numpy() for p in positions]
        return SideColumns(names, "DataFrame", lambda: iter([columns]))
    if is_polars(data) or is_arrow(data):
        table, origin = arrow_table(data)
        _check_present(names, [str(c) for c in table.column_names], origin)
        arrow_columns = [table.column(name) for name in names]
        return SideColumns(names, origin, lambda: iter([arrow_columns]))
    raise StablefitInputError(
        f"columns {', '.join(map(repr, names))} were named, but the data is an array "
        "without column names: pass the weights or cluster keys as arrays instead."
    )


def _check_present(names: Sequence[str], available: Sequence[str], origin: str) -> None:
    check_unique(available, origin, blank_may_repeat=True)
    absent = [name for name in names if name not in available]
    if absent:
        raise missing_columns_error(absent, available, origin)


def _file_columns(path: Path, names: tuple[str, ...], numeric: tuple[str, ...]) -> SideColumns:
    format_ = file_format(path)
    reader = format_.reader
    if reader is not None:
        _check_present(names, reader.column_names(path), str(path))

        def binary_chunks() -> Iterator[list[Column]]:
            for batch in reader.record_batches(path, list(names), SIDE_BATCH_ROWS):
                yield [batch.column(name) for name in names]

        return SideColumns(names, str(path), binary_chunks)
    delimiter = format_.delimiter

    def csv_chunks() -> Iterator[list[Column]]:
        invalid: list[pa_csv.InvalidRow] = []
        types = {name: pa.float64() if name in numeric else pa.string() for name in names}
        reader = pa_csv.open_csv(
            str(path),
            read_options=pa_csv.ReadOptions(block_size=SIDE_BLOCK_BYTES),
            parse_options=parse_options(delimiter, invalid),
            convert_options=pa_csv.ConvertOptions(
                column_types=types, include_columns=list(names), strings_can_be_null=True
            ),
        )
        rows = 0
        with reader:
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    return
                except pa.ArrowInvalid as error:
                    raise _csv_error(path, names, numeric, error, rows) from None
                rows += batch.num_rows
                yield [batch.column(name) for name in names]

    with open(path, "rb"):  # a missing or unreadable file is named here, not mid-pass
        pass
    header = pa_csv.open_csv(
        str(path), read_options=pa_csv.ReadOptions(block_size=SIDE_BLOCK_BYTES)
    ).schema.names
    _check_present(names, [str(n) for n in header], str(path))
    return SideColumns(names, str(path), csv_chunks, row_label="line", row_offset=FIRST_DATA_LINE)


def _csv_error(
    path: Path,
    names: tuple[str, ...],
    numeric: tuple[str, ...],
    error: pa.ArrowInvalid,
    rows_before: int,
) -> StablefitInputError:
    text = str(error)
    for name in numeric:
        if f"column '{name}'" in text or f"column {name}" in text:
            return StablefitInputError(
                f"{path}: column {name!r} holds a value that is not a number after line "
                f"{rows_before + FIRST_DATA_LINE - 1} ({text.splitlines()[0]}); weights "
                "must be numbers."
            )
    return StablefitInputError(
        f"{path}: cannot read columns {', '.join(map(repr, names))}: {text.splitlines()[0]}"
    )
