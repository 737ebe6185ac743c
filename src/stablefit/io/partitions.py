"""Sources made of partitions: many files as one table, or a Dask collection.

A partition is a small, picklable ``reader`` and a ``payload``: ``reader.open(payload)`` is
an ordinary :class:`~stablefit.io.Source` of the partition's rows. A file's reader opens
its file (the payload is None); a Dask DataFrame's reader converts the pandas frame that
the cluster hands it as the payload. Either way the same code reads a partition wherever
it runs, on this machine or on a cluster's worker.

Rows of a partitioned source are numbered ``(partition << PART_BITS) + row``, where row
counts within the partition, so that a partition can number its rows without knowing how
many came before it; :meth:`Schema.format_rows <stablefit.io.schema.Schema.format_rows>`
turns such a number back into "data/part-3.csv line 17".

Without an engine, the partitions are read here one after the other (``batches()``),
so memory stays bounded by one partition's reading. With an engine
(:mod:`stablefit.engines`), :func:`over_partitions` runs a function on each partition
where the engine places it and merges the results up a tree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from stablefit.io.schema import PART_BITS, Batch, Schema, Source

if TYPE_CHECKING:
    from stablefit.engines import Engine

T = TypeVar("T")


class PartitionReader(Protocol):
    """Opens one partition as a Source; must be picklable and small."""

    def open(self, payload: Any) -> Source: ...


@dataclass(frozen=True)
class Partition:
    """One piece of a partitioned source (see the module docstring)."""

    reader: PartitionReader
    payload: Any = None


@dataclass
class OffsetSource:
    """A source whose row numbers start at ``first_row`` instead of 0."""

    source: Source
    first_row: int

    @property
    def schema(self) -> Schema:
        return self.source.schema

    def batches(self) -> Iterator[Batch]:
        for batch in self.source.batches():
            yield Batch(batch.X, batch.y, batch.first_row + self.first_row)


def part_offset(index: int) -> int:
    """The number of a partition's first row (see the module docstring)."""
    return index << PART_BITS


@dataclass
class PartitionedSource:
    """A table made of partitions, read here or, with an engine, where the engine places them.

    ``schema`` describes the whole table (its ``parts`` name the partitions in messages).
    """

    schema: Schema
    partitions: Sequence[Partition]
    engine: Engine | None = None

    def batches(self) -> Iterator[Batch]:
        """A pass here, partition after partition (with an engine, each one fetched)."""
        for partition in self.partitions:
            if self.engine is None:
                yield from partition.reader.open(partition.payload).batches()
            else:
                yield from self.engine.fetch(partition).batches()

    def kept(self, nbytes: int) -> PartitionedSource:
        """This source with its partitions held in the engine's memory between passes,
        when ``nbytes`` of float64 data fit there (otherwise, and without an engine, itself:
        later passes read the partitions again)."""
        if self.engine is None:
            return self
        partitions = self.engine.keep(self.partitions, nbytes)
        return PartitionedSource(self.schema, partitions, self.engine)


def is_distributed(source: Source) -> bool:
    """Whether an engine reads the source's partitions (rather than this process)."""
    return isinstance(source, PartitionedSource) and source.engine is not None


def over_partitions(source: Source, task: Callable[[Source], T], combine: Callable[[T, T], T]) -> T:
    """``task`` on each partition where an engine runs it, the results merged in order with
    ``combine``; for any other source, ``task(source)`` here."""
    if isinstance(source, PartitionedSource) and source.engine is not None:
        return source.engine.map_reduce(task, source.partitions, combine)
    return task(source)
