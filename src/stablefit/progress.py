"""Progress of long runs: one bar per pass over the data.

A fit reads its data two or more times (the Summary, then the solver's passes), ``doctor``
once. :class:`ProgressSource` counts the rows of each pass over a source read here (the
first pass counts up, later ones fill a bar, since the total is known by then); an engine
counts partitions as its workers finish them. Both report to a :class:`Progress`;
:class:`RichProgress` draws it on the terminal with rich.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from stablefit.io.schema import Batch, Schema, Source


class Progress(Protocol):
    """Hears of passes over the data and of the rows or partitions each one has done."""

    def start_pass(self, *, parts: int | None = None, rows: int | None = None) -> None: ...

    def advance(self, *, parts: int = 0, rows: int = 0) -> None: ...

    def end_pass(self) -> None: ...


class RichProgress:
    """Bars on the terminal (rich), one per pass: rows read, or partitions done.

    Use as a context manager; the bars stay on screen when it ends.
    """

    def __init__(self, console: Any) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
        )
        from rich.progress import Progress as Bars

        self.bars = Bars(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}"),
            TimeElapsedColumn(),
            console=console,
        )
        self.passes = 0
        self.task: Any = None

    def __enter__(self) -> RichProgress:
        self.bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bars.stop()

    def start_pass(self, *, parts: int | None = None, rows: int | None = None) -> None:
        self.passes += 1
        self.task = self.bars.add_task(
            f"pass {self.passes}",
            total=parts if parts is not None else rows,
            unit="partitions" if parts is not None else "rows",
        )

    def advance(self, *, parts: int = 0, rows: int = 0) -> None:
        self.bars.advance(self.task, parts or rows)

    def end_pass(self) -> None:
        task = self.bars.tasks[-1]
        self.bars.update(self.task, total=task.completed)


@dataclass
class ProgressSource:
    """A source whose passes report the rows they read to ``progress``."""

    source: Source
    progress: Progress
    _rows: int | None = field(default=None, init=False)

    @property
    def schema(self) -> Schema:
        return self.source.schema

    def batches(self) -> Iterator[Batch]:
        self.progress.start_pass(rows=self._rows)
        rows = 0
        try:
            for batch in self.source.batches():
                rows += batch.n_rows
                self.progress.advance(rows=batch.n_rows)
                yield batch
        finally:
            self.progress.end_pass()
        self._rows = rows
