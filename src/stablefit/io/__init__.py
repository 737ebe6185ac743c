"""Sources -> batches: every input becomes float64 batches plus a schema."""

from stablefit.io.cache import CachingSource
from stablefit.io.schema import ArraySource, Batch, DroppedColumn, Schema, Source
from stablefit.io.sources import open_source

__all__ = [
    "ArraySource",
    "Batch",
    "CachingSource",
    "DroppedColumn",
    "Schema",
    "Source",
    "open_source",
]
