"""Many files as one table: a directory or a glob of CSV, Parquet or Arrow IPC files.

``open_source("data/part-*.parquet")``, ``open_source("data/")`` (every data file
below it, hidden files and names starting with ``_`` left out, as Spark's ``_SUCCESS``)
read the files as one table, in natural order (``part-2`` before ``part-10``), each
file a partition (:mod:`stablefit.io.partitions`) read on its own by the single-file
readers: file after file with bounded memory here, or in parallel on a cluster.

Directories named ``key=value`` (Hive partitioning, as Spark, Dask and pyarrow write them)
add a column ``key`` holding each file's ``value``: a number when every file's value is
one (``__HIVE_DEFAULT_PARTITION__`` is missing), text otherwise.

The first file decides the table's columns. Every other file must have the same ones
(any order; with ``columns=``, at least those): a file that differs is an error naming
both files and the column, raised when that file is reached.
"""

from __future__ import annotations

import errno
import glob
import math
import os
import re
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pyarrow as pa

from stablefit.errors import StablefitInputError
from stablefit.io.arrow import describe_column, is_numeric_type
from stablefit.io.columns import ColumnChoice, quote_names, select_columns
from stablefit.io.formats import FILE_FORMATS, FileFormat, file_ending
from stablefit.io.partitions import OffsetSource, Partition, PartitionedSource, part_offset
from stablefit.io.schema import Batch, NoRowsError, Schema, Source

GLOB_CHARACTERS = "*?["
HIVE_MISSING = "__HIVE_DEFAULT_PARTITION__"


def names_many_files(path: str) -> bool:
    """Whether ``path`` is a directory or a glob pattern (rather than one file: a file
    named ``data[1].csv`` that exists is that file, not a pattern)."""
    if Path(path).is_dir():
        return True
    return not Path(path).exists() and any(c in path for c in GLOB_CHARACTERS)


def natural_key(path: Path) -> list[object]:
    """``part-2`` before ``part-10``: runs of digits compare as numbers."""
    return [int(run) if run.isdigit() else run for run in re.split(r"(\d+)", str(path))]


def hidden(relative: Path) -> bool:
    return any(part.startswith((".", "_")) for part in relative.parts)


def not_a_file_error(path: Path) -> StablefitInputError:
    """The error for a data path that is not a regular file: missing, a symbolic link to
    nothing or in a loop, a named pipe or a device (data is read more than once)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        if error.errno == errno.ELOOP:
            return StablefitInputError(
                f"{path}: a loop of symbolic links, which leads to no file; point the link "
                "at the data file."
            )
        if path.is_symlink():
            return StablefitInputError(
                f"{path}: a symbolic link to {os.readlink(path)!r}, which does not exist; "
                "point the link at the data file."
            )
        return StablefitInputError(f"{path}: file not found (working directory: {Path.cwd()}).")
    what = "a named pipe" if stat.S_ISFIFO(mode) else "not a regular file"
    return StablefitInputError(
        f"{path}: {what}; stablefit reads the data more than once, so it needs a file: save "
        "the data to one and give its path."
    )


def find_files(pattern: str, kinds: Sequence[str]) -> tuple[list[Path], Path]:
    """The data files a directory, a glob or a file's path names, in natural order, and the
    directory below which Hive keys are read."""
    path = Path(pattern)
    if path.is_dir():
        root = path
        found = [
            p
            for p in path.rglob("*")
            if p.is_file()
            and not hidden(Path(*p.parts[len(root.parts) :]))
            and p.name.lower().endswith(tuple(kinds))
        ]
        if not found:
            raise StablefitInputError(
                f"{pattern}: the directory holds no CSV, Parquet or Arrow IPC files (looked for "
                f"{', '.join(kinds)} below it)."
            )
    elif path.exists() or not any(c in pattern for c in GLOB_CHARACTERS):  # one file
        if not path.is_file():
            raise not_a_file_error(path)
        return [path], path.parent
    else:
        cut = next(i for i, p in enumerate(path.parts) if any(c in p for c in GLOB_CHARACTERS))
        root = Path(*path.parts[:cut])
        found = [Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file()]
        if not found:
            raise StablefitInputError(
                f"{pattern}: no file matches (working directory: {Path.cwd()})."
            )
    return sorted(found, key=natural_key), root


def hive_keys(path: Path, root: Path) -> dict[str, str]:
    """The ``key=value`` directories between ``root`` and the file."""
    keys: dict[str, str] = {}
    for part in path.parts[len(root.parts) : -1]:
        key, equals, value = part.partition("=")
        if equals and key:
            keys[unquote(key)] = unquote(value)
    return keys


def key_number(value: str) -> float | None:
    """A Hive value as a number (NaN for the missing marker), or None for text."""
    if value == HIVE_MISSING:
        return math.nan
    try:
        return float(value)
    except ValueError:
        return None


@dataclass(frozen=True)
class FileReader:
    """Opens one file of the table, checking that its columns match the first file's."""

    path: Path
    format_: FileFormat
    index: int
    reference: Path
    reference_columns: tuple[str, ...]
    same_columns: bool
    feature_names: tuple[str, ...]
    # Per feature of the table: None when the file holds it, else the file's Hive value.
    key_values: tuple[float | None, ...]
    target: str | None
    batch_rows: int

    def open(self, payload: object = None) -> Source:
        try:
            sample = self.format_.read_sample(self.path)
        except NoRowsError as empty:
            self.check_columns([str(name) for name in empty.columns])
            label, offset = self.format_.row_label
            schema = Schema(
                feature_names=self.feature_names,
                target_name=self.target,
                row_label=label,
                row_offset=offset,
                origin=str(self.path),
            )
            return OffsetSource(NoRows(schema), part_offset(self.index))
        self.check_columns([str(name) for name in sample.schema.names])
        file_features = tuple(
            name
            for name, value in zip(self.feature_names, self.key_values, strict=True)
            if value is None
        )
        choice = ColumnChoice(target=self.target, columns=file_features)
        source = self.format_.open(
            self.path, choice=choice, batch_rows=self.batch_rows, sample=sample
        )
        if len(file_features) < len(self.feature_names):
            schema = replace(source.schema, feature_names=self.feature_names)
            source = KeyColumns(source, schema, self.key_values)
        return OffsetSource(source, part_offset(self.index))

    def check_columns(self, names: list[str]) -> None:
        """Raise when the file lacks a column the table needs, or (unless the features
        were named) has columns other than the first file's."""
        needed = [
            name
            for name, value in zip(self.feature_names, self.key_values, strict=True)
            if value is None
        ] + ([self.target] if self.target else [])
        absent = [name for name in needed if name not in names]
        if self.same_columns:
            absent = [name for name in self.reference_columns if name not in names]
        if absent:
            raise StablefitInputError(
                f"{self.path}: no column {quote_names(absent)}, which {self.reference} has; "
                "the files of one table need the same columns."
            )
        extra = [name for name in names if name not in self.reference_columns]
        if self.same_columns and extra:
            raise StablefitInputError(
                f"{self.path}: column {quote_names(extra)} is not in {self.reference}; the "
                "files of one table need the same columns (or name the features with "
                "columns=)."
            )


@dataclass
class NoRows:
    """A file of the table with its column names and no rows."""

    schema: Schema

    def batches(self) -> Iterator[Batch]:
        return iter(())


@dataclass
class KeyColumns:
    """A file's source with the Hive key columns put among its features."""

    source: Source
    schema: Schema
    key_values: tuple[float | None, ...]

    def batches(self) -> Iterator[Batch]:
        from_file = [j for j, value in enumerate(self.key_values) if value is None]
        for batch in self.source.batches():
            X = np.empty((batch.n_rows, len(self.key_values)))
            X[:, from_file] = batch.X
            for j, value in enumerate(self.key_values):
                if value is not None:
                    X[:, j] = value
            yield Batch(X, batch.y, batch.first_row)


def first_with_rows(
    pattern: str, paths: Sequence[Path], format_: FileFormat
) -> tuple[Path, pa.RecordBatch]:
    """The first file with rows and its first rows, which decide the table's columns (the
    files before it have column names and no rows: empty partitions); an error when no
    file has rows."""
    for path in paths:
        try:
            return path, format_.read_sample(path)
        except NoRowsError:
            if len(paths) == 1:
                raise
    raise StablefitInputError(
        f"{pattern}: its {len(paths)} files have column names but no rows; nothing to read."
    )


def open_files(pattern: str, *, choice: ColumnChoice, batch_rows: int) -> PartitionedSource:
    """Every data file a directory or glob names, as one table (see the module
    docstring)."""
    paths, root = find_files(pattern, list(FILE_FORMATS))
    endings = [file_ending(path) for path in paths]
    format_ = FILE_FORMATS[endings[0]]
    for path, ending in zip(paths, endings, strict=True):
        if FILE_FORMATS[ending] != format_:
            raise StablefitInputError(
                f"{pattern}: {paths[0]} and {path} are of different kinds ({endings[0]}, "
                f"{ending}); the files of one table must all be CSV, all TSV, all Parquet "
                "or all Arrow IPC."
            )
    keys = [hive_keys(path, root) for path in paths]
    for path, file_keys in zip(paths, keys, strict=True):
        if list(file_keys) != list(keys[0]):
            raise StablefitInputError(
                f"{pattern}: {paths[0]} lies below the partition keys {list(keys[0])} but "
                f"{path} below {list(file_keys)}; the files of one table need the same keys."
            )
    first, sample = first_with_rows(pattern, paths, format_)
    file_names = [str(name) for name in sample.schema.names]
    key_names = list(keys[0])
    clash = [name for name in key_names if name in file_names]
    if clash:
        raise StablefitInputError(
            f"{first}: column {quote_names(clash)} is also a partition key of the directories "
            "above it; rename one of them."
        )
    key_values = {name: [key_number(file_keys[name]) for file_keys in keys] for name in key_names}
    label, offset = format_.row_label

    def describe(position: int) -> str:
        if position < len(file_names):
            return describe_column(sample.column(position), label, offset)
        name = key_names[position - len(file_names)]
        return f"partition key with values such as {keys[0][name]!r}"

    selection = select_columns(
        file_names + key_names,
        [is_numeric_type(field.type) for field in sample.schema]
        + [all(v is not None for v in key_values[name]) for name in key_names],
        choice,
        origin=str(first),
        describe=describe,
    )
    if selection.target_name in key_names:
        raise StablefitInputError(
            f"{pattern}: the target {selection.target_name!r} is a partition key; a target "
            "must be a column of the files."
        )
    schema = Schema(
        feature_names=selection.feature_names,
        target_name=selection.target_name,
        dropped=selection.dropped,
        row_label=label,
        row_offset=offset,
        origin=pattern,
        parts=tuple(str(path) for path in paths),
    )
    partitions = [
        Partition(
            FileReader(
                path=path,
                format_=format_,
                index=index,
                reference=first,
                reference_columns=tuple(file_names),
                same_columns=choice.columns is None,
                feature_names=selection.feature_names,
                key_values=tuple(
                    key_values[name][index] if name in key_values else None
                    for name in selection.feature_names
                ),
                target=selection.target_name,
                batch_rows=batch_rows,
            )
        )
        for index, path in enumerate(paths)
    ]
    return PartitionedSource(schema, partitions)
