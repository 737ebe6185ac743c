"""``open_source``: any supported input -> a :class:`~stablefit.io.schema.Source`."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from stablefit.errors import StablefitInputError
from stablefit.io.columns import ColumnChoice
from stablefit.io.files import names_many_files, not_a_file_error, open_files
from stablefit.io.formats import file_format
from stablefit.io.memory import (
    array_source,
    is_arrow,
    is_dask_collection,
    is_pandas,
    is_polars,
    pandas_source,
    table_source,
)
from stablefit.io.schema import Source


def open_source(
    data: Any,
    y: Any = None,
    *,
    target: str | None = None,
    feature_names: Sequence[str] | None = None,
    drop_non_numeric: bool = False,
    columns: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    batch_rows: int = 65536,
    engine: Any = None,
) -> Source:
    """Read any supported input as float64 batches plus a schema.

    Parameters
    ----------
    data : path, array-like, DataFrame, Series or Arrow table
        A CSV (``.csv``, ``.tsv``, or compressed: ``.csv.gz``, ``.csv.zst``) file with a
        header, a Parquet (``.parquet``, ``.pq``) or Arrow IPC file (Feather:
        ``.feather``, ``.arrow``, ``.arrows``, ``.ipc``); a directory or a glob pattern
        (``"data/*.parquet"``) of such files, read as one table
        (:mod:`stablefit.io.files`); a NumPy array (2-D, or 1-D for one feature); a pandas
        or polars DataFrame or Series; a pyarrow Table, RecordBatch or Array; a Dask
        DataFrame, Series or Array.
    y : array-like, optional
        The target as its own array (or Series), one value per row of ``data``.
    target : str, optional
        Name of the target column of a file or table (or of an array whose columns are
        named by ``feature_names``). Without ``target`` or ``y`` there is no target.
    feature_names : sequence of str, optional
        Names of an array's columns; default ``x0, x1, ...``. Tables use their own names.
    drop_non_numeric : bool, default False
        Leave out non-numeric feature columns (recorded in ``schema.dropped`` with the
        reason) instead of raising an error. Booleans count as numeric.
    columns : sequence of str, optional
        The feature columns of a file or table to read, in this order; every other column
        (text or not) is ignored. Default: every numeric column except the target and
        those named in ``exclude``.
    exclude : sequence of str, optional
        Columns of a file or table that are not features (weights, cluster keys); each
        must exist.
    batch_rows : int, default 65536
        Largest number of rows in one batch.
    engine : Engine or distributed.Client, optional
        Where the partitions of files and Dask collections are read: an
        :class:`~stablefit.engines.Engine`, or a ``distributed.Client`` to read them on its
        cluster. Default: files on this machine, Dask collections with Dask (the default
        client when there is one, else Dask's local scheduler).

    Returns
    -------
    Source
        ``source.schema`` names the features, the target and the dropped columns;
        every ``source.batches()`` call is a new pass over the data. Files are read in
        bounded chunks, never whole. Missing cells come out as NaN, infinities as inf.

    Raises
    ------
    StablefitInputError
        A missing or unreadable file, an unsupported file type, an empty file or table,
        a malformed CSV line, a missing or non-numeric target, non-numeric features,
        duplicate column names, or X and y of different lengths. The message names the
        column or line and the fix.

    Examples
    --------
    >>> import numpy as np
    >>> source = open_source(np.eye(3), np.arange(3.0))
    >>> source.schema.feature_names
    ('x0', 'x1', 'x2')
    >>> [batch.n_rows for batch in source.batches()]
    [3]
    """
    if isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1:
        raise StablefitInputError(f"batch_rows must be a positive integer, got {batch_rows!r}.")
    if isinstance(columns, str):
        raise StablefitInputError(f"columns must be a sequence of names, not {columns!r}.")
    choice = ColumnChoice(
        target=target,
        drop_non_numeric=drop_non_numeric,
        columns=None if columns is None else tuple(str(name) for name in columns),
        exclude=tuple(str(name) for name in exclude),
    )
    if isinstance(data, str | os.PathLike):
        if engine is not None or names_many_files(str(data)):
            check_file_args(str(data), y, feature_names)
            table = open_files(str(data), choice=choice, batch_rows=batch_rows)
            return dataclasses.replace(table, engine=resolve_engine(engine))
        return file_source(
            Path(data), y, choice=choice, feature_names=feature_names, batch_rows=batch_rows
        )
    if is_dask_collection(data) or is_dask_collection(y):
        from stablefit.engines.dask import dask_source

        return dask_source(
            data,
            y,
            choice=choice,
            feature_names=feature_names,
            batch_rows=batch_rows,
            engine=resolve_engine(engine, dask_default=True),
        )
    if engine is not None:
        raise StablefitInputError(
            "engine= reads files and Dask collections where they are; for data already in "
            "memory here, leave it out."
        )
    if feature_names is not None and (is_pandas(data) or is_polars(data) or is_arrow(data)):
        raise StablefitInputError(
            "feature_names is for arrays; tables use their own column names (rename the "
            "columns instead)."
        )
    if is_pandas(data):
        return pandas_source(data, y, choice=choice, batch_rows=batch_rows)
    if is_polars(data) or is_arrow(data):
        return table_source(data, y, choice=choice, batch_rows=batch_rows)
    if instance_of_lazy_polars(data):
        raise StablefitInputError("got a polars LazyFrame; call .collect() on it first.")
    if columns is not None or exclude:
        raise StablefitInputError(
            f"{'columns' if columns is not None else 'exclude'}= selects columns of files "
            "and tables; for an array, select the columns with X[:, [...]] instead."
        )
    return array_source(data, y, target=target, feature_names=feature_names, batch_rows=batch_rows)


def resolve_engine(engine: Any, *, dask_default: bool = False) -> Any:
    """An :class:`~stablefit.engines.Engine` for ``engine=``: itself, the Dask engine of a
    ``distributed.Client``, or for None the Dask engine (``dask_default``) or no engine."""
    if engine is None and not dask_default:
        return None
    if engine is None or type(engine).__name__ == "Client":
        from stablefit.engines.dask import DaskEngine

        return DaskEngine.default() if engine is None else DaskEngine(engine)
    if not hasattr(engine, "map_reduce"):
        raise StablefitInputError(
            f"engine={engine!r} is neither a distributed.Client nor a stablefit engine."
        )
    return engine


def instance_of_lazy_polars(data: Any) -> bool:
    return type(data).__name__ == "LazyFrame" and type(data).__module__.startswith("polars")


def check_file_args(path: str, y: Any, feature_names: Sequence[str] | None) -> None:
    if y is not None:
        raise StablefitInputError(
            f"{path}: for a file, name the target column with target= instead of passing y."
        )
    if feature_names is not None:
        raise StablefitInputError(
            f"{path}: feature_names is for arrays; a file's header names its columns."
        )


def file_source(
    path: Path,
    y: Any,
    *,
    choice: ColumnChoice,
    feature_names: Sequence[str] | None,
    batch_rows: int,
) -> Source:
    check_file_args(str(path), y, feature_names)
    format_ = file_format(path)
    if not path.is_file():
        raise not_a_file_error(path)
    return format_.open(path, choice=choice, batch_rows=batch_rows)


def table_features(X: Any, feature_names: Sequence[str]) -> np.ndarray | None:
    """A table's columns ``feature_names`` by name (in any order; other columns ignored),
    as one float64 array in that order, a missing value NaN; None for an array, a list,
    or a table none of whose column names is one of ``feature_names`` (a model fitted on an
    array, whose columns are then taken in order).

    Raises
    ------
    StablefitInputError
        ``X`` is a path (the rows of a file are read by ``stablefit predict``), or a table
        naming some of the features but not all.
    """
    if isinstance(X, str | os.PathLike):
        raise StablefitInputError(
            f"X is a path ({os.fspath(X)!r}); pass the rows as an array or a table (e.g. "
            "pandas.read_csv(path)), or predict a file's rows with 'stablefit predict "
            "MODEL.json DATA'."
        )
    if isinstance(X, pa.Table):
        names = X.column_names
    elif (is_pandas(X) or is_polars(X)) and hasattr(X, "columns"):
        names = [str(name) for name in X.columns]
    else:
        return None
    if not set(feature_names) & set(names):
        return None
    source = open_source(X, columns=list(feature_names))
    return np.concatenate([batch.X for batch in source.batches()])
