"""The Dask engine: each partition read and summarized where Dask runs it.

A pass is a graph of ``dask.delayed`` tasks: one per partition, which opens the partition
with its reader and runs the pass's task on it (a Summary, a block of the solver's sums,
a triangular factor), then a tree of merges, ``FAN_IN`` results at a time, in the
partitions' order. Only those results move between processes: d×d-sized pieces, never
rows. The graph runs on the ``distributed`` client given (or the default one), or without
one on Dask's local scheduler.

When a fit's float64 data fit in a quarter of the cluster's memory, the partitions are
held there (``persist``) from the second pass on; otherwise each pass reads them again. A
worker that dies takes its results and held partitions with it: Dask recomputes them from
the graph, and since every task is a pure function of its partition and the merges keep
a fixed tree, the answer is the same to the last bit.

Dask collections become partitions here too: a Dask DataFrame's partitions are pandas
frames (:class:`FrameReader`), a Dask array's are blocks of rows (:class:`BlockReader`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import dask
import numpy as np
from dask.delayed import Delayed, delayed

from stablefit.errors import StablefitInputError
from stablefit.io.cache import DEFAULT_CACHE_BYTES
from stablefit.io.columns import ColumnChoice, select_columns
from stablefit.io.memory import NUMERIC_KINDS, array_source, pandas_is_numeric, pandas_source
from stablefit.io.partitions import OffsetSource, Partition, PartitionedSource, part_offset
from stablefit.io.schema import ArraySource, Batch, Schema, Source
from stablefit.parallel import task_threads
from stablefit.progress import Progress

T = TypeVar("T")

# Results merged by one task: the tree over P partitions is ceil(log_8 P) merges deep.
FAN_IN = 8
# Share of the workers' memory limit that held partitions may take.
KEEP_FRACTION = 0.25


def run_task(task: Callable[[Source], T], reader: Any, payload: Any) -> T:
    """A pass's task on one partition, with one thread: the engine runs one task per core."""
    with task_threads(1):
        return task(reader.open(payload))


def merge_all(combine: Callable[[T, T], T], *results: T) -> T:
    merged = results[0]
    for result in results[1:]:
        merged = combine(merged, result)
    return merged


def load(reader: Any, payload: Any) -> HeldBatches:
    """A partition's float64 batches, to be held in memory between passes."""
    with task_threads(1):
        source = reader.open(payload)
        return HeldBatches(source.schema, list(source.batches()))


@dataclass
class HeldBatches:
    """A partition held in memory: its schema and its batches."""

    schema: Schema
    held: list[Batch]

    def batches(self) -> Iterator[Batch]:
        yield from self.held


class HeldReader:
    """The reader of held partitions: the payload is the partition's source itself."""

    def open(self, payload: HeldBatches) -> Source:
        return payload


@dataclass
class DaskEngine:
    """Runs passes on a ``distributed`` client, or on Dask's local scheduler without one.

    ``progress`` (:class:`~stablefit.progress.Progress`) hears of each partition done.
    """

    client: Any = None
    progress: Progress | None = None

    @classmethod
    def default(cls, progress: Progress | None = None) -> DaskEngine:
        """The engine on the default ``distributed`` client, if there is one."""
        try:
            from distributed import default_client

            client = default_client()
        except (ImportError, ValueError):
            client = None
        return cls(client, progress)

    def map_reduce(
        self,
        task: Callable[[Source], T],
        partitions: Sequence[Partition],
        combine: Callable[[T, T], T],
    ) -> T:
        token = uuid.uuid4().hex[:12]
        leaves = [
            delayed(run_task, pure=False)(
                task, p.reader, p.payload, dask_key_name=f"stablefit-partition-{token}-{i}"
            )
            for i, p in enumerate(partitions)
        ]
        level, depth = leaves, 0
        while len(level) > 1:
            depth += 1
            level = [
                delayed(merge_all, pure=False)(
                    combine,
                    *level[start : start + FAN_IN],
                    dask_key_name=f"stablefit-merge-{token}-{depth}-{start // FAN_IN}",
                )
                for start in range(0, len(level), FAN_IN)
            ]
        return self._compute(level[0], leaves)

    def _compute(self, root: Delayed, leaves: list[Delayed]) -> Any:
        if self.progress is not None:
            self.progress.start_pass(parts=len(leaves))
        try:
            if self.client is None:
                (result,) = dask.compute(root)
                return result
            from distributed import as_completed

            root_future, *leaf_futures = self.client.compute([root, *leaves])
            # Only as_completed holds the partitions' results, each until it is counted:
            # then the merge that needs it holds it, and the cluster frees it after that.
            pending = as_completed(leaf_futures, loop=self.client.loop)
            del leaf_futures
            try:
                for done in pending:
                    if done.status == "error":
                        done.result()  # raises the partition's own error
                    if self.progress is not None:
                        self.progress.advance(parts=1)
                    del done
                return root_future.result()
            finally:
                root_future.cancel()
        finally:
            if self.progress is not None:
                self.progress.end_pass()

    def keep(self, partitions: Sequence[Partition], nbytes: int) -> list[Partition]:
        if nbytes > self.memory_for_held_partitions():
            return list(partitions)
        loads = [delayed(load, pure=False)(p.reader, p.payload) for p in partitions]
        held = self.client.persist(loads) if self.client is not None else dask.persist(*loads)
        return [Partition(HeldReader(), payload) for payload in held]

    def memory_for_held_partitions(self) -> float:
        if self.client is None:
            return DEFAULT_CACHE_BYTES  # held in this process, as one machine's cache
        workers = self.client.scheduler_info(n_workers=-1)["workers"].values()
        return KEEP_FRACTION * sum(worker.get("memory_limit") or 0 for worker in workers)

    def fetch(self, partition: Partition) -> Source:
        payload = partition.payload
        if isinstance(payload, Delayed):
            payload = (
                self.client.compute(payload).result()
                if self.client is not None
                else payload.compute()
            )
        return partition.reader.open(payload)


# -- Dask collections as partitioned sources --------------------------------------------------


@dataclass(frozen=True)
class FrameReader:
    """Opens a partition of a Dask DataFrame (a pandas frame) with the table's columns.

    This conversion is all an engine needs from a pandas partition: Spark's
    ``mapInPandas`` hands over the same kind of frame.
    """

    schema: Schema
    index: int
    batch_rows: int

    def open(self, frame: Any) -> Source:
        if len(frame) == 0:
            return empty_source(self.schema)
        source = pandas_source(
            frame,
            None,
            choice=ColumnChoice(target=self.schema.target_name, columns=self.schema.feature_names),
            batch_rows=self.batch_rows,
            origin=f"partition {self.index} of the {self.schema.origin}",
        )
        return OffsetSource(source, part_offset(self.index))


@dataclass(frozen=True)
class BlockReader:
    """Opens a block of rows of a Dask array (and of its target), numbered from
    ``first_row``."""

    schema: Schema
    first_row: int
    batch_rows: int

    def open(self, block: tuple[np.ndarray, np.ndarray | None]) -> Source:
        X, y = block
        if X.shape[0] == 0:
            return empty_source(self.schema)
        source = array_source(
            X, y, target=None, feature_names=self.schema.feature_names, batch_rows=self.batch_rows
        )
        return OffsetSource(replace(source, schema=self.schema), self.first_row)


def empty_source(schema: Schema) -> Source:
    d = schema.n_features
    return ArraySource(
        np.empty((0, d)), None if schema.target_name is None else np.empty(0), schema
    )


def dask_source(
    data: Any,
    y: Any,
    *,
    choice: ColumnChoice,
    feature_names: Sequence[str] | None,
    batch_rows: int,
    engine: Any,
) -> PartitionedSource:
    """A Dask DataFrame, Series or Array as a source of partitions run by ``engine``."""
    if hasattr(data, "to_frame") and not hasattr(data, "columns"):  # a Series
        data = data.to_frame()
    if hasattr(data, "columns"):
        if y is not None:
            raise StablefitInputError(
                "for a Dask DataFrame, pass the target as one of its columns: "
                "ddf.assign(y=y) and target='y'."
            )
        if feature_names is not None:
            raise StablefitInputError(
                "feature_names is for arrays; a Dask DataFrame uses its own column names."
            )
        return frame_source(data, choice=choice, batch_rows=batch_rows, engine=engine)
    if choice.columns is not None:
        raise StablefitInputError(
            "columns= selects columns of files and tables; for a Dask array, select the "
            "columns with X[:, [...]] instead."
        )
    return array_blocks_source(
        data,
        y,
        target=choice.target,
        feature_names=feature_names,
        batch_rows=batch_rows,
        engine=engine,
    )


def frame_source(
    frame: Any, *, choice: ColumnChoice, batch_rows: int, engine: Any
) -> PartitionedSource:
    meta = frame._meta  # the empty pandas frame that describes every partition
    names = [str(name) for name in meta.columns]
    selection = select_columns(
        names,
        [pandas_is_numeric(meta.iloc[:, p]) for p in range(len(names))],
        choice,
        origin="Dask DataFrame",
        describe=lambda p: f"dtype {meta.dtypes.iloc[p]}",
    )
    n = frame.npartitions
    schema = Schema(
        feature_names=selection.feature_names,
        target_name=selection.target_name,
        dropped=selection.dropped,
        origin="Dask DataFrame",
        parts=tuple(f"partition {i}" for i in range(n)),
    )
    reader_schema = replace(schema, parts=())
    partitions = [
        Partition(FrameReader(reader_schema, i, batch_rows), part)
        for i, part in enumerate(frame.to_delayed())
    ]
    return PartitionedSource(schema, partitions, engine)


def array_blocks_source(
    X: Any,
    y: Any,
    *,
    target: str | None,
    feature_names: Sequence[str] | None,
    batch_rows: int,
    engine: Any,
) -> PartitionedSource:
    import dask.array as da

    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2:
        raise StablefitInputError(
            f"X has {X.ndim} dimensions (shape {X.shape}); pass a 2-D array of shape "
            "(rows, features)."
        )
    if X.dtype.kind not in NUMERIC_KINDS:
        raise StablefitInputError(
            f"X holds dtype {X.dtype}; stablefit needs real numbers: convert it, e.g. with "
            ".astype(float)."
        )
    if any(np.isnan(size) for size in X.chunks[0]):
        raise StablefitInputError(
            "the Dask array's blocks have unknown lengths; call X.compute_chunk_sizes() first."
        )
    names = list(feature_names) if feature_names is not None else None
    if names is None:
        names = [f"x{j}" for j in range(X.shape[1])]
    if len(names) != X.shape[1]:
        raise StablefitInputError(
            f"feature_names has {len(names)} names but X has {X.shape[1]} columns; give one "
            "name per column."
        )
    target_name = None
    if target is not None:
        if y is not None:
            raise StablefitInputError(
                f"both y and target={target!r} were given; pass the target either as a "
                "column name (target=) or as an array (y), not both."
            )
        if target not in names:
            raise StablefitInputError(f"X: no column named {target!r} to use as the target.")
        position = names.index(target)
        y = X[:, position]
        X = da.delete(X, position, axis=1)
        names.pop(position)
        target_name = target
    elif y is not None:
        y = da.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1 or y.shape[0] != X.shape[0]:
            raise StablefitInputError(
                f"X has {X.shape[0]} rows but y has shape {y.shape}; they must describe the "
                "same rows."
            )
        target_name = "y"
    X = X.rechunk({1: -1})
    row_blocks = X.to_delayed().ravel()
    y_blocks = (
        [None] * len(row_blocks) if y is None else list(y.rechunk((X.chunks[0],)).to_delayed())
    )
    schema = Schema(feature_names=tuple(names), target_name=target_name, origin="Dask array")
    starts = np.concatenate([[0], np.cumsum(X.chunks[0])[:-1]]).astype(int)
    partitions = [
        Partition(BlockReader(schema, int(start), batch_rows), delayed(tuple)([block, y_block]))
        for start, block, y_block in zip(starts, row_blocks, y_blocks, strict=True)
    ]
    return PartitionedSource(schema, partitions, engine)
