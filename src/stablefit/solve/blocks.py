"""The data as the solver reads it: passes over raw blocks, each a map and a merge.

The solver never loops over the data itself. Each pass is
``blocks.map_reduce(function, combine, initial)``: ``function`` on every raw block
``(Z_hi, Z_lo or None, y)`` of cache-sized rows, the results merged with ``combine`` in the
order of the rows. Where that runs is the source's business: on one machine a thread pool
maps over the blocks as they are read; a source spread over a cluster
(:mod:`stablefit.engines`) runs the same :func:`fold_blocks` on each of its partitions
where that partition is read, and merges the partitions' results up a tree with the same
``combine``. Only those results travel, never the rows.

A pass that sums (the refinement's residuals and gradient) and one that merges triangular
factors (TSQR) are both of this shape, as is any per-row work added to a pass later.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, NamedTuple, Protocol, TypeVar

import numpy as np

from stablefit.io import Source
from stablefit.io.partitions import over_partitions
from stablefit.parallel import ordered_map

# Rows of one work unit: its temporaries stay in the processor's cache.
SUB_BLOCK_ROWS = 8192

T = TypeVar("T")


class RawBlock(NamedTuple):
    """Consecutive rows of the data as given: ``Z_hi + Z_lo`` (lo None when Z is exact in
    double), the target, and optionally each row's weight and cluster codes (rows × ways).

    A transform may return a plain tuple ``(Z_hi, Z_lo, y)``: it is read as a RawBlock
    without weights or clusters.
    """

    Z_hi: np.ndarray
    Z_lo: np.ndarray | None
    y: np.ndarray
    weights: np.ndarray | None = None
    groups: np.ndarray | None = None

    def rows(self, selection: slice | np.ndarray) -> RawBlock:
        """The same columns for a subset of the rows."""
        return RawBlock(*(None if part is None else part[selection] for part in self))


class Blocks(Protocol):
    """Passes over the raw blocks of the data, each a map and an ordered merge."""

    def map_reduce(
        self, function: Callable[[RawBlock], T], combine: Callable[[T, T], T], initial: T
    ) -> T: ...


@dataclass(frozen=True)
class SourceBlocks:
    """Raw blocks made from a source's batches by ``transforms``, applied in order.

    The first transform takes a :class:`~stablefit.io.Batch` and returns a raw block, each
    later one takes and returns a raw block. They must be picklable (module-level
    functions, or instances of module-level classes) so that a cluster can run them where
    the partitions are read.
    """

    source: Source
    transforms: tuple[Callable[[Any], RawBlock], ...]

    def then(self, transform: Callable[[RawBlock], RawBlock]) -> SourceBlocks:
        """These blocks, each passed through ``transform`` as well."""
        return replace(self, transforms=(*self.transforms, transform))

    def map_reduce(
        self, function: Callable[[RawBlock], T], combine: Callable[[T, T], T], initial: T
    ) -> T:
        task = partial(fold_blocks, self.transforms, function, combine, initial)
        return over_partitions(self.source, task, combine)


def fold_blocks(
    transforms: tuple[Callable[[Any], RawBlock], ...],
    function: Callable[[RawBlock], T],
    combine: Callable[[T, T], T],
    initial: T,
    source: Source,
) -> T:
    """One pass over ``source`` (all the data, or one partition of it), merged in order."""
    result = initial
    for part in ordered_map(function, sub_blocks(source, transforms)):
        result = combine(result, part)
    return result


def sub_blocks(
    source: Source, transforms: tuple[Callable[[Any], RawBlock], ...]
) -> Iterator[RawBlock]:
    """The source's batches as raw blocks of at most SUB_BLOCK_ROWS rows."""
    for batch in source.batches():
        raw = batch
        for transform in transforms:
            raw = transform(raw)
        block = RawBlock(*raw)
        for start in range(0, block.Z_hi.shape[0], SUB_BLOCK_ROWS):
            yield block.rows(slice(start, start + SUB_BLOCK_ROWS))
