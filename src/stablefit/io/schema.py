"""What every source yields: numeric batches, and a schema that says what they hold."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class DroppedColumn:
    """A column of the source that is not among the features, and why."""

    name: str
    reason: str


@dataclass(frozen=True)
class Schema:
    """Feature names, the target, what was dropped, and how rows are named to the user.

    ``row_label`` and ``row_offset`` turn a 0-based row index into what the user sees:
    arrays keep their own 0-based indices ("row 0"); a CSV file with a header names file
    lines ("line 2" is the first data row).
    """

    feature_names: tuple[str, ...]
    target_name: str | None = None
    dropped: tuple[DroppedColumn, ...] = ()
    row_label: str = "row"
    row_offset: int = 0
    origin: str = "array"

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def format_rows(
        self, indices: Iterable[int], *, total: int | None = None, limit: int = 5
    ) -> str:
        """``"lines 4, 9 and 3 more"`` for 0-based row indices; ``total`` counts all of them."""
        shown = [int(i) + self.row_offset for i in indices]
        count = len(shown) if total is None else total
        if count == 0:
            return f"no {self.row_label}s"
        word = self.row_label if count == 1 else f"{self.row_label}s"
        text = ", ".join(str(r) for r in shown[:limit])
        more = count - min(len(shown), limit)
        return f"{word} {text}" + (f" and {more} more" if more > 0 else "")


@dataclass(frozen=True)
class Batch:
    """A block of consecutive rows as float64.

    ``X`` has shape (rows, n_features) and ``y`` shape (rows,) or is None when there is no
    target. Values are as read: NaN marks a missing or unparsable-as-missing cell, and
    inf stays inf, so that every later stage can see and report them. ``first_row`` is the
    0-based index of the batch's first row in the whole source.
    """

    X: np.ndarray
    y: np.ndarray | None
    first_row: int = 0

    @property
    def n_rows(self) -> int:
        return self.X.shape[0]

    @property
    def row_indices(self) -> np.ndarray:
        return np.arange(self.first_row, self.first_row + self.n_rows)


class Source(Protocol):
    """Anything that can be read in passes of batches. Each ``batches()`` call is a new pass."""

    schema: Schema

    def batches(self) -> Iterator[Batch]: ...


@dataclass
class ArraySource:
    """An in-memory design matrix and target, served in batches of views (no copies)."""

    X: np.ndarray
    y: np.ndarray | None
    schema: Schema
    batch_rows: int = 65536

    def batches(self) -> Iterator[Batch]:
        n = self.X.shape[0]
        for start in range(0, max(n, 1), self.batch_rows):
            stop = min(start + self.batch_rows, n)
            if stop <= start:
                return
            y = None if self.y is None else self.y[start:stop]
            yield Batch(self.X[start:stop], y, start)
