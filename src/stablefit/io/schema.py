"""What every source yields: numeric batches, and a schema that says what they hold."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from stablefit.errors import StablefitInputError


@dataclass(frozen=True)
class DroppedColumn:
    """A column of the source that is not among the features, and why."""

    name: str
    reason: str


class NoRowsError(StablefitInputError):
    """A file with column names but no rows (``columns``): an error for a file on its own;
    among the files of one table, a part that adds no rows (as Dask and Spark write for an
    empty partition)."""

    def __init__(self, message: str, columns: Iterable[str]) -> None:
        super().__init__(message)
        self.columns = tuple(columns)


# Row numbers of a partitioned source: (partition << PART_BITS) + row within the partition
# (see stablefit.io.partitions), room for 2**23 partitions of up to 2**40 rows each.
PART_BITS = 40


@dataclass(frozen=True)
class Schema:
    """Feature names, the target, what was dropped, and how rows are named to the user.

    ``row_label`` and ``row_offset`` turn a 0-based row index into what the user sees:
    arrays keep their own 0-based indices ("row 0"); a CSV file with a header names file
    lines ("line 2" is the first data row). ``parts``, for a source made of partitions
    (files), names them: a row index then says in which partition the row is.
    """

    feature_names: tuple[str, ...]
    target_name: str | None = None
    dropped: tuple[DroppedColumn, ...] = ()
    row_label: str = "row"
    row_offset: int = 0
    origin: str = "array"
    parts: tuple[str, ...] = ()

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def format_rows(
        self, indices: Iterable[int], *, total: int | None = None, limit: int = 5
    ) -> str:
        """``"lines 4, 9 and 3 more"`` for 0-based row indices; ``total`` counts all of them.

        With ``parts``: ``"data/a.csv lines 4, 9; data/c.csv line 2 and 3 more"``.
        """
        indices = [int(i) for i in indices]
        count = len(indices) if total is None else total
        if count == 0:
            return f"no {self.row_label}s"
        shown = indices[:limit]

        def rows(numbers: list[int], n: int) -> str:
            word = self.row_label if n == 1 else f"{self.row_label}s"
            return f"{word} {', '.join(str(r + self.row_offset) for r in numbers)}"

        if not self.parts:
            text = rows(shown, count)
        else:
            groups: dict[int, list[int]] = {}
            for index in shown:
                groups.setdefault(index >> PART_BITS, []).append(index & ((1 << PART_BITS) - 1))
            text = "; ".join(
                f"{self.parts[part]} {rows(numbers, len(numbers))}"
                for part, numbers in groups.items()
            )
        more = count - len(shown)
        return text + (f" and {more} more" if more > 0 else "")


@dataclass(frozen=True)
class Batch:
    """A block of consecutive rows as float64.

    ``X`` has shape (rows, n_features) and ``y`` shape (rows,) or is None when there is no
    target. Values are as read: NaN marks a missing or unparsable-as-missing cell, and
    inf stays inf, so that every later stage can see and report them. ``first_row`` is the
    0-based index of the batch's first row in the whole source.

    A fit with weights or clusters also gets each row's ``weights`` (NaN where missing)
    and cluster codes ``groups`` (rows × ways, -1 where missing), attached by
    :class:`stablefit.rowdata.WithRows`; sources themselves leave them None.
    """

    X: np.ndarray
    y: np.ndarray | None
    first_row: int = 0
    weights: np.ndarray | None = None
    groups: np.ndarray | None = None

    @property
    def n_rows(self) -> int:
        return self.X.shape[0]

    @property
    def row_indices(self) -> np.ndarray:
        return np.arange(self.first_row, self.first_row + self.n_rows)

    def usable(self) -> np.ndarray:
        """Rows whose weight and cluster keys are all present (all rows without them)."""
        return rows_present(self.n_rows, self.weights, self.groups)


def rows_present(n_rows: int, weights: np.ndarray | None, groups: np.ndarray | None) -> np.ndarray:
    """Rows with a weight (not NaN) and every cluster code (not -1), of those given."""
    ok = np.ones(n_rows, dtype=bool)
    if weights is not None:
        ok &= ~np.isnan(weights)
    if groups is not None:
        ok &= (groups >= 0).all(axis=1)
    return ok


@runtime_checkable
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
