"""Sources -> batches: every input becomes float64 batches plus a schema."""

from stablefit.io.schema import ArraySource, Batch, DroppedColumn, Schema, Source

__all__ = ["ArraySource", "Batch", "DroppedColumn", "Schema", "Source"]
