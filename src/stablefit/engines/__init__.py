"""Engines: where the partitions of a source are read, and how their results are merged.

Everything stablefit computes from data is one of two shapes: a :class:`~stablefit.summary.Summary`
(``summarize(partition)``, then ``a.merge(b)``) or a pass of the solver (a function on each
raw block, results merged with an ordered ``combine``: :mod:`stablefit.solve.blocks`).
Both reach a source made of partitions (:class:`~stablefit.io.partitions.PartitionedSource`)
as one call, ``engine.map_reduce(task, partitions, combine)``: ``task`` is a picklable
function of one partition's :class:`~stablefit.io.Source`, run where the engine reads that
partition, and ``combine`` merges two results, the earlier partition's first. So an engine
is a thin adapter with three methods, and it never sees what is computed:

- ``map_reduce(task, partitions, combine)``: run ``task(partition.reader.open(payload))``
  for each partition, and merge the results up a tree, keeping the partitions' order;
- ``keep(partitions, nbytes)``: hold the partitions' float64 batches in the engine's
  memory between passes when ``nbytes`` fit there, else return them as they are;
- ``fetch(partition)``: one partition's Source here, for the rare pass that must stream
  rows to the caller (``stablefit predict``).

:mod:`stablefit.engines.dask` is the adapter for Dask's ``distributed``. Another engine
needs the same three methods: Spark, for instance, would run ``task`` inside
``mapInPandas`` over a DataFrame's partitions (the payload is the partition's pandas frame,
read by :class:`stablefit.engines.dask.FrameReader`'s conversion) and merge the pickled
results with ``treeReduce``; Ray would ``ray.remote`` the same task. The solver and the
checks never know which engine ran.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    from stablefit.io import Source
    from stablefit.io.partitions import Partition

T = TypeVar("T")


class Engine(Protocol):
    """Runs per-partition tasks where the partitions are read (see the module docstring)."""

    def map_reduce(
        self,
        task: Callable[[Source], T],
        partitions: Sequence[Partition],
        combine: Callable[[T, T], T],
    ) -> T: ...

    def keep(self, partitions: Sequence[Partition], nbytes: int) -> list[Partition]: ...

    def fetch(self, partition: Partition) -> Source: ...
