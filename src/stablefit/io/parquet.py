"""Parquet files, read batch by batch with :meth:`pyarrow.parquet.ParquetFile.iter_batches`.

Only the selected columns are read, and only one batch of them (plus the row group being
decoded) is in memory at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from stablefit.errors import StablefitInputError
from stablefit.io.schema import NoRowsError
from stablefit.io.signatures import not_parquet_signature

if TYPE_CHECKING:
    import pyarrow.parquet as pq

# Rows read up front to describe non-numeric columns in messages.
SAMPLE_ROWS = 1000


def open_parquet(path: Path) -> pq.ParquetFile:
    import pyarrow.parquet as pq  # only for Parquet files: CSV runs start sooner without it

    try:
        if path.stat().st_size == 0:
            raise StablefitInputError(f"{path}: the file is empty (0 bytes); expected Parquet.")
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError, UnicodeDecodeError) as error:
        signature = not_parquet_signature(path) if isinstance(error, pa.ArrowException) else None
        if signature is not None:
            what, fix = signature
            raise StablefitInputError(f"{path}: the file is {what}, not Parquet; {fix}.") from None
        raise unreadable(path, error) from None


def unreadable(path: Path, error: BaseException) -> StablefitInputError:
    """A Parquet file that cannot be opened or decoded, with the fix."""
    if isinstance(error, OSError) and error.strerror:
        return StablefitInputError(
            f"{path}: cannot read the file ({error.strerror}); check that it exists and is "
            "readable."
        )
    if isinstance(error, UnicodeDecodeError):  # pyarrow decodes names as it opens a file
        error = f"a column name or metadata that is not UTF-8 text: {error.reason}"
    return StablefitInputError(
        f"{path}: not a readable Parquet file ({error}); the file is damaged or cut short: "
        "write it again."
    )


@contextmanager
def decoding(path: Path) -> Iterator[None]:
    """Errors of pyarrow's decoder (damaged pages, unsupported types) as input errors."""
    try:
        yield
    except (pa.ArrowException, OSError, UnicodeDecodeError) as error:
        raise unreadable(path, error) from None


def read_sample(path: Path) -> pa.RecordBatch:
    """The file's first rows, with its column names and types."""
    with open_parquet(path) as parquet, decoding(path):
        num_rows = parquet.metadata.num_rows
        if num_rows == 0:
            raise NoRowsError(
                f"{path}: the file has columns but no rows.", parquet.schema_arrow.names
            )
        first = next(parquet.iter_batches(batch_size=SAMPLE_ROWS), None)
    if first is None:  # the footer counts rows that no page holds
        raise unreadable(path, ValueError(f"no rows, although it says it has {num_rows:,}"))
    return first


def column_names(path: Path) -> list[str]:
    """The names of the file's columns, from its footer."""
    with open_parquet(path) as parquet:
        return [str(name) for name in parquet.schema_arrow.names]


def record_batches(path: Path, columns: list[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
    """The file's rows in order, as record batches of the ``columns`` of at most
    ``batch_rows`` rows."""
    with open_parquet(path) as parquet:
        batches = parquet.iter_batches(batch_size=batch_rows, columns=columns)
        while True:
            with decoding(path):
                batch = next(batches, None)
            if batch is None:
                return
            yield batch
