"""Keep the batches of a first pass in memory, within a budget, for the passes after it.

The solver reads its data two or more times. Parsing a CSV file again costs as much as
the first time, so a :class:`CachingSource` keeps the parsed batches while their total
size stays within ``budget_bytes``; beyond it the cache is dropped at once and later
passes read the source again. Memory therefore never exceeds the budget plus what the
source itself holds in flight.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from stablefit.io.schema import Batch, Schema, Source

# The float64 data of a 1 GB CSV of numbers (about 550 MB) fit; a file beyond the budget
# peaks at about 0.9 GB: the budget, reached just before the cache is dropped, plus the
# 0.28 GB the process holds otherwise (libraries, chunks in flight).
DEFAULT_CACHE_BYTES = 600 * 2**20


@dataclass
class CachingSource:
    """A Source whose first complete pass, if small enough, serves every later pass."""

    source: Source
    budget_bytes: int = DEFAULT_CACHE_BYTES
    _cached: list[Batch] | None = field(default=None, init=False, repr=False)

    @property
    def schema(self) -> Schema:
        return self.source.schema

    @property
    def cached(self) -> bool:
        return self._cached is not None

    def batches(self) -> Iterator[Batch]:
        if self._cached is not None:
            yield from self._cached
            return
        kept: list[Batch] | None = []
        size = 0
        for batch in self.source.batches():
            if kept is not None:
                size += batch.X.nbytes + (0 if batch.y is None else batch.y.nbytes)
                if size <= self.budget_bytes:
                    kept.append(batch)
                else:
                    kept = None
            yield batch
        self._cached = kept
