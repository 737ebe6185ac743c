"""The file formats stablefit reads, told by the ending of a file's name.

Text formats (CSV, TSV) are read by :mod:`stablefit.io.csv`. Binary formats of typed
columns (Parquet, Arrow IPC) share one source, :class:`ColumnarFileSource`, over their
reader module's ``read_sample``, ``column_names``, ``record_batches`` and ``decoding``.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pyarrow as pa

from stablefit.errors import StablefitInputError
from stablefit.io import csv
from stablefit.io.arrow import batch_from_arrow, schema_of, select_arrow_columns
from stablefit.io.columns import ColumnChoice
from stablefit.io.schema import Batch, Schema, Source


@dataclass(frozen=True)
class FileFormat:
    """A format: a text format's field ``delimiter``, or the module that reads a binary
    format (by name, so that a partition's reader pickles to a cluster's workers)."""

    name: str
    delimiter: str | None = None
    reader_module: str | None = None

    @property
    def reader(self) -> ModuleType | None:
        return None if self.reader_module is None else importlib.import_module(self.reader_module)

    @property
    def row_label(self) -> tuple[str, int]:
        """How messages number the rows: a text file's lines (from its first data line),
        a binary file's 0-based rows."""
        return ("line", csv.FIRST_DATA_LINE) if self.delimiter else ("row", 0)

    def read_sample(self, path: Path) -> pa.RecordBatch:
        """The first rows of the file, with its column names and types."""
        reader = self.reader
        if reader is None:
            return csv.read_sample(path, self.delimiter)
        return reader.read_sample(path)

    def open(
        self,
        path: Path,
        *,
        choice: ColumnChoice,
        batch_rows: int,
        sample: pa.RecordBatch | None = None,
    ) -> Source:
        """The file as a source of the columns ``choice`` selects (from ``sample``, read
        here unless given)."""
        if self.delimiter is not None:
            return csv.CsvSource.open(
                path, delimiter=self.delimiter, choice=choice, batch_rows=batch_rows, sample=sample
            )
        sample = self.read_sample(path) if sample is None else sample
        selection = select_arrow_columns(sample.schema, sample, choice, origin=str(path))
        schema = schema_of(selection, str(path))
        return ColumnarFileSource(path=path, schema=schema, format_=self, batch_rows=batch_rows)


CSV = FileFormat("CSV", delimiter=",")
TSV = FileFormat("TSV", delimiter="\t")
PARQUET = FileFormat("Parquet", reader_module="stablefit.io.parquet")
ARROW_IPC = FileFormat("Arrow IPC (Feather)", reader_module="stablefit.io.arrow_ipc")

# File name endings and their formats.
FILE_FORMATS: dict[str, FileFormat] = {
    ".csv": CSV,
    ".csv.gz": CSV,
    ".csv.zst": CSV,
    ".tsv": TSV,
    ".tsv.gz": TSV,
    ".tsv.zst": TSV,
    ".parquet": PARQUET,
    ".pq": PARQUET,
    ".feather": ARROW_IPC,
    ".arrow": ARROW_IPC,
    ".arrows": ARROW_IPC,
    ".ipc": ARROW_IPC,
}


def matching_ending(name: str) -> str | None:
    """The ending of ``name`` that names a format (the longest), or None."""
    name = name.lower()
    return next(
        (ending for ending in sorted(FILE_FORMATS, key=len, reverse=True) if name.endswith(ending)),
        None,
    )


def file_ending(path: Path) -> str:
    """The ending of ``path``'s name that names its format; an error for any other."""
    ending = matching_ending(path.name)
    if ending is not None:
        return ending
    if str(path) == "-":
        raise StablefitInputError(
            "-: data from the standard input cannot be read (every fit reads it more than "
            "once); save it to a file first, e.g. a .csv, and give that file's path."
        )
    raise StablefitInputError(
        f"{path}: unsupported file type; stablefit reads {', '.join(FILE_FORMATS)} files. "
        "Save the data as CSV, Parquet or Feather."
    )


def file_format(path: Path) -> FileFormat:
    """The format ``path``'s name says (see :func:`file_ending`)."""
    return FILE_FORMATS[file_ending(path)]


@dataclass
class ColumnarFileSource:
    """A Parquet or Arrow IPC file, read in passes of float64 batches (rows are 0-based
    "row" numbers). Only the selected columns are converted, one batch at a time."""

    path: Path
    schema: Schema
    format_: FileFormat
    batch_rows: int = 65536

    def batches(self) -> Iterator[Batch]:
        reader = self.format_.reader
        names = list(self.schema.feature_names)
        target = self.schema.target_name
        columns = names if target is None else [*names, target]
        rows = 0
        for record_batch in reader.record_batches(self.path, columns, self.batch_rows):
            with reader.decoding(self.path):  # a value the conversion refuses
                batch = batch_from_arrow(
                    [record_batch.column(name) for name in names],
                    None if target is None else record_batch.column(target),
                    rows,
                )
            rows += batch.n_rows
            yield batch
