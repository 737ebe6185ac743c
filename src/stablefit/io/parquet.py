"""Parquet files, read batch by batch with :meth:`pyarrow.parquet.ParquetFile.iter_batches`.

Only the selected columns are read, and only one batch of them (plus the row group being
decoded) is in memory at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from stablefit.errors import StablefitInputError
from stablefit.io.arrow import batch_from_arrow, schema_of, select_arrow_columns
from stablefit.io.columns import ColumnChoice
from stablefit.io.schema import Batch, NoRowsError, Schema
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


@dataclass
class ParquetSource:
    """A Parquet file, read in passes of float64 batches (rows are 0-based "row" numbers)."""

    path: Path
    schema: Schema
    batch_rows: int = 65536

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        choice: ColumnChoice,
        batch_rows: int,
        sample: pa.RecordBatch | None = None,
    ) -> ParquetSource:
        """Choose the columns from ``sample`` (:func:`read_sample`, read here unless given)."""
        sample = read_sample(path) if sample is None else sample
        selection = select_arrow_columns(
            sample.schema,
            sample,
            choice,
            origin=str(path),
        )
        return cls(path=path, schema=schema_of(selection, str(path)), batch_rows=batch_rows)

    def batches(self) -> Iterator[Batch]:
        names = list(self.schema.feature_names)
        target = self.schema.target_name
        columns = names if target is None else [*names, target]
        rows = 0
        with open_parquet(self.path) as parquet:
            record_batches = parquet.iter_batches(batch_size=self.batch_rows, columns=columns)
            while True:
                with decoding(self.path):
                    record_batch = next(record_batches, None)
                    if record_batch is None:
                        return
                    batch = batch_from_arrow(
                        [record_batch.column(name) for name in names],
                        None if target is None else record_batch.column(target),
                        rows,
                    )
                rows += batch.n_rows
                yield batch
