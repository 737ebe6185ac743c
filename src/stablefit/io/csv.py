"""CSV and TSV files (optionally gzip-compressed) read in bounded, parallel chunks.

The header and the column types come from the first block, read with
:func:`pyarrow.csv.open_csv`. Each pass then cuts the file at line breaks into chunks of a
few MiB and parses them on a small thread pool: a chunk of plain decimal
numbers with the compiled parser of :mod:`stablefit.io.csv_numbers` (four times as fast
per core), any other chunk with :func:`pyarrow.csv.read_csv`, every numeric column
straight into float64. At most ``workers + 1`` chunks are in flight, so memory does not
grow with the file, and the chunks are handed on in file order so row numbers stay exact.
An uncompressed file is memory-mapped: its chunks are views of the page cache rather than
copies, and the pages of a chunk are handed back once it is parsed, so the resident memory
does not grow with the file either. (As with any memory map, a file truncated by another
program while it is read ends the process with SIGBUS.) A compressed file is read as a
stream.

Blank lines are kept as rows of missing values rather than skipped: that keeps every
row's file line number right, and a blank line shows up as missing values at its line
instead of vanishing silently. Quoted values must not contain line breaks: the file is
cut into chunks at line breaks.
"""

from __future__ import annotations

import contextlib
import mmap
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from stablefit.errors import StablefitInputError
from stablefit.io.arrow import (
    batch_from_arrow,
    first_unparsable,
    schema_of,
    select_arrow_columns,
)
from stablefit.io.columns import ColumnChoice, Selection
from stablefit.io.csv_numbers import SKIP, TARGET, parse_plain_numbers
from stablefit.io.schema import Batch, Schema
from stablefit.parallel import default_workers

# Bytes of the file's start used to read the header and infer column types.
SNIFF_BYTES = 1 << 20
# Block size of pyarrow's parser inside a chunk; larger blocks parse more slowly.
PARSE_BLOCK_BYTES = 1 << 20
# Chunk sizes: about batch_rows rows, within these bounds.
MIN_CHUNK_BYTES = 1 << 20
MAX_CHUNK_BYTES = 4 << 20
# A line longer than this (or a file without "\n" line breaks) is refused, not buffered.
MAX_LINE_BYTES = 64 << 20
MAX_WORKERS = 4
# The header is line 1, so data row i (0-based) is on line i + 2.
FIRST_DATA_LINE = 2


def _keep() -> None:
    """Nothing to hand back: the chunk's buffer is freed with it."""


@dataclass(frozen=True)
class Chunk:
    """A run of whole lines of the file; the first chunk starts with the header line.

    ``release`` is called once the chunk is parsed.
    """

    data: pa.Buffer
    has_header: bool
    release: Callable[[], None] = _keep


class ChunkParseError(Exception):
    """Raised in a worker; the reader turns it into a message naming the line."""

    def __init__(self, error: pa.ArrowInvalid, invalid_row: pa_csv.InvalidRow | None):
        super().__init__(str(error))
        self.error = error
        self.invalid_row = invalid_row


def read_error(path: Path, message: str) -> StablefitInputError:
    return StablefitInputError(f"{path}: {message}")


def ragged_row_error(path: Path, line: int, row: pa_csv.InvalidRow) -> StablefitInputError:
    text = row.text if len(row.text) <= 80 else row.text[:77] + "..."
    return read_error(
        path,
        f"line {line} has {row.actual_columns} fields where the header has "
        f"{row.expected_columns}: {text!r}. Fix that line (a stray or missing delimiter, "
        "or an unquoted delimiter inside a value).",
    )


def long_line_message(size: int) -> str:
    return (
        f"no line break in {size >> 20} MiB; lines must end with '\\n' (or '\\r\\n') and "
        "be shorter than that."
    )


def _hand_back(mapped: mmap.mmap, start: int, stop: int) -> None:
    """Drop the pages of ``mapped[start:stop]`` from this process's memory; they stay in
    the page cache, and a chunk that still reads one of them maps it again."""
    if hasattr(mmap, "MADV_DONTNEED"):
        first = start - start % mmap.PAGESIZE
        mapped.madvise(mmap.MADV_DONTNEED, first, stop - first)


def read_into(stream: pa.NativeFile, view: memoryview) -> int:
    """Fill ``view`` from ``stream``; fewer bytes only at the end of the stream."""
    filled = 0
    while filled < len(view):
        count = stream.readinto(view[filled:])
        if not count:
            break
        filled += count
    return filled


def read_first_block(path: Path, delimiter: str) -> pa.RecordBatch:
    """The header and the first rows, with the column types pyarrow infers from them."""
    invalid: list[pa_csv.InvalidRow] = []
    try:
        reader = pa_csv.open_csv(
            str(path),
            read_options=pa_csv.ReadOptions(block_size=SNIFF_BYTES, use_threads=False),
            parse_options=parse_options(delimiter, invalid),
        )
        with reader:
            return reader.read_next_batch()
    except StopIteration:
        raise read_error(
            path, "the file has a header line but no data rows; nothing to read."
        ) from None
    except pa.ArrowInvalid as error:
        if invalid:
            raise ragged_row_error(path, invalid[0].number, invalid[0]) from None
        if "Empty CSV file" in str(error):
            raise read_error(path, "the file holds no header line and no rows.") from None
        raise read_error(path, f"cannot read the file as CSV: {error}") from None


def read_sample(path: Path, delimiter: str) -> pa.RecordBatch:
    """The header and the first block of a file that is not empty."""
    if path.stat().st_size == 0:
        raise read_error(path, "the file is empty (0 bytes); expected a header line and rows.")
    return read_first_block(path, delimiter)


def parse_options(delimiter: str, invalid: list[pa_csv.InvalidRow]) -> pa_csv.ParseOptions:
    def keep_first(row: pa_csv.InvalidRow) -> str:
        invalid.append(row)
        return "error"

    return pa_csv.ParseOptions(
        delimiter=delimiter, ignore_empty_lines=False, invalid_row_handler=keep_first
    )


def separates_plain_numbers(delimiter: str) -> bool:
    """One byte that cannot be part of a number or a line break (the compiled parser's terms)."""
    return len(delimiter.encode()) == 1 and delimiter not in '0123456789+-.eE\r\n"'


def plain_number_destinations(
    file_names: list[str], selection: Selection, column_types: dict[str, pa.DataType]
) -> np.ndarray | None:
    """Field -> feature column, TARGET or SKIP, when every chosen column is read as float64."""
    if any(t != pa.float64() for t in column_types.values()):
        return None
    if len(set(file_names)) < len(file_names):  # pyarrow's choice among equal names rules
        return None
    destinations = np.full(len(file_names), SKIP, dtype=np.int64)
    destinations[list(selection.feature_positions)] = np.arange(len(selection.feature_positions))
    if selection.target_position is not None:
        destinations[selection.target_position] = TARGET
    return destinations


@dataclass
class CsvSource:
    """A delimited text file with a header line, read in passes of float64 batches."""

    path: Path
    delimiter: str
    file_names: tuple[str, ...]
    column_types: dict[str, pa.DataType]
    schema: Schema
    batch_rows: int = 65536
    chunk_bytes: int = MAX_CHUNK_BYTES
    workers: int = 2
    # Where each field of a line goes, for the compiled parser; None when it cannot serve.
    destinations: np.ndarray | None = None

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        delimiter: str,
        choice: ColumnChoice,
        batch_rows: int,
        sample: pa.RecordBatch | None = None,
    ) -> CsvSource:
        """Choose the columns and their types from the header and the first block
        (``sample``, from :func:`read_sample`: read here unless given)."""
        sample = read_sample(path, delimiter) if sample is None else sample
        selection = select_arrow_columns(
            sample.schema,
            sample,
            choice,
            origin=str(path),
            row_label="line",
            row_offset=FIRST_DATA_LINE,
        )
        column_types = {}
        for position in (*selection.feature_positions, selection.target_position):
            if position is not None:
                field = sample.schema.field(position)
                column_types[field.name] = (
                    pa.bool_() if pa.types.is_boolean(field.type) else pa.float64()
                )
        # Chunks of about batch_rows rows; the first block's size in memory stands in for
        # its size as text (within a factor of about two for numbers).
        bytes_per_row = max(sample.nbytes / max(sample.num_rows, 1), 1.0)
        return cls(
            path=path,
            delimiter=delimiter,
            file_names=tuple(sample.schema.names),
            column_types=column_types,
            schema=schema_of(selection, str(path), row_label="line", row_offset=FIRST_DATA_LINE),
            batch_rows=batch_rows,
            chunk_bytes=int(min(max(batch_rows * bytes_per_row, MIN_CHUNK_BYTES), MAX_CHUNK_BYTES)),
            workers=min(MAX_WORKERS, default_workers()),
            destinations=plain_number_destinations(sample.schema.names, selection, column_types)
            if separates_plain_numbers(delimiter)
            else None,
        )

    # -- one pass -------------------------------------------------------------------------

    def batches(self) -> Iterator[Batch]:
        rows = 0
        with ThreadPoolExecutor(self.workers) as pool:
            pending: deque[tuple[Chunk, Future[Batch]]] = deque()
            try:
                for chunk in self._all_chunks():
                    pending.append((chunk, pool.submit(self._parse, chunk)))
                    if len(pending) > self.workers:
                        block = self._result(*pending.popleft(), rows)
                        yield from self._split(block, rows)
                        rows += block.n_rows
                while pending:
                    block = self._result(*pending.popleft(), rows)
                    yield from self._split(block, rows)
                    rows += block.n_rows
            finally:
                for _, future in pending:
                    future.cancel()

    def _all_chunks(self) -> Iterator[Chunk]:
        """The file's chunks: views of a memory map when the file can be mapped, else read."""
        mapped = None
        if not self.path.name.lower().endswith(".gz"):
            with open(self.path, "rb") as file, contextlib.suppress(OSError, ValueError):
                mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        if mapped is not None:
            yield from self._mapped_chunks(mapped)
            return
        with pa.input_stream(str(self.path)) as stream:
            yield from self._chunks(stream)

    def _mapped_chunks(self, mapped: mmap.mmap) -> Iterator[Chunk]:
        """Whole lines of the mapped file, about ``chunk_bytes`` at a time, without a copy.

        The map is unmapped when the last view of it is gone.
        """
        if hasattr(mmap, "MADV_SEQUENTIAL"):
            mapped.madvise(mmap.MADV_SEQUENTIAL)
        view = memoryview(mapped)
        size = len(mapped)
        start = 0
        while start < size:
            cut = size
            if start + self.chunk_bytes < size:
                cut = mapped.rfind(b"\n", start, start + self.chunk_bytes) + 1
                if cut == 0:  # a line longer than a chunk
                    cut = mapped.find(b"\n", start, start + MAX_LINE_BYTES) + 1
                    if cut == 0 and start + MAX_LINE_BYTES < size:
                        raise read_error(self.path, long_line_message(MAX_LINE_BYTES))
                    cut = cut or size
            data = pa.py_buffer(view[start:cut])
            yield Chunk(data, start == 0, partial(_hand_back, mapped, start, cut))
            start = cut

    def _chunks(self, stream: pa.NativeFile) -> Iterator[Chunk]:
        """Whole lines, about ``chunk_bytes`` at a time, each in its own buffer.

        Each buffer is filled in place and handed to the parser without a copy; only the
        partial line at its end is copied into the next one.
        """
        rest = b""
        first = True
        while True:
            buffer = bytearray(len(rest) + self.chunk_bytes)
            buffer[: len(rest)] = rest
            filled = len(rest) + read_into(stream, memoryview(buffer)[len(rest) :])
            if filled < len(buffer):  # the end of the file
                if filled:
                    yield Chunk(pa.py_buffer(memoryview(buffer)[:filled]), first)
                return
            cut = buffer.rfind(b"\n") + 1
            if cut == 0:
                if filled > MAX_LINE_BYTES:
                    raise read_error(self.path, long_line_message(filled))
                rest = bytes(buffer)
                continue
            yield Chunk(pa.py_buffer(memoryview(buffer)[:cut]), first)
            rest = bytes(memoryview(buffer)[cut:])
            first = False

    def _read_options(self, chunk: Chunk, column_types: dict[str, pa.DataType]) -> dict:
        return {
            "read_options": pa_csv.ReadOptions(
                column_names=list(self.file_names),
                skip_rows=1 if chunk.has_header else 0,
                use_threads=False,
                block_size=PARSE_BLOCK_BYTES,
            ),
            "convert_options": pa_csv.ConvertOptions(
                column_types=column_types,
                include_columns=list(column_types),
                strings_can_be_null=True,
            ),
        }

    def _parse(self, chunk: Chunk) -> Batch:
        """A chunk's rows as float64 (in a worker thread; ``first_row`` is set later)."""
        if self.destinations is not None:
            parsed = parse_plain_numbers(
                chunk.data,
                has_header=chunk.has_header,
                destinations=self.destinations,
                n_features=self.schema.n_features,
                has_target=self.schema.target_name is not None,
                delimiter=self.delimiter,
            )
            if parsed is not None:
                if not parsed.odd_rows.size:
                    return parsed.batch
                # The lines the compiled parser left, read by pyarrow on their own; if they
                # do not read as one row each, the whole chunk is read again, so that an
                # error names its line.
                with contextlib.suppress(ChunkParseError):
                    odd = self._parse_with_arrow(Chunk(pa.py_buffer(parsed.odd_lines), False))
                    if odd.n_rows == parsed.odd_rows.size:
                        return parsed.completed(odd)
        return self._parse_with_arrow(chunk)

    def _parse_with_arrow(self, chunk: Chunk) -> Batch:
        invalid: list[pa_csv.InvalidRow] = []
        try:
            table = pa_csv.read_csv(
                chunk.data,
                parse_options=parse_options(self.delimiter, invalid),
                **self._read_options(chunk, self.column_types),
            )
        except pa.ArrowInvalid as error:
            raise ChunkParseError(error, invalid[0] if invalid else None) from None
        target_name = self.schema.target_name
        return batch_from_arrow(
            [table.column(name) for name in self.schema.feature_names],
            None if target_name is None else table.column(target_name),
            0,
        )

    def _result(self, chunk: Chunk, future: Future[Batch], rows_before: int) -> Batch:
        """The chunk's rows, or an error naming the file line at fault."""
        try:
            block = future.result()
            chunk.release()
            return block
        except ChunkParseError as failure:
            first_line = 1 if chunk.has_header else rows_before + FIRST_DATA_LINE
            if failure.invalid_row is not None:
                line = first_line + failure.invalid_row.number - 1
                raise ragged_row_error(self.path, line, failure.invalid_row) from None
            raise self._conversion_error(chunk, first_line, failure.error) from None

    def _conversion_error(
        self, chunk: Chunk, first_line: int, error: pa.ArrowInvalid
    ) -> StablefitInputError:
        """Find the first cell of the chunk that is not a number, by re-reading it as text."""
        as_text = dict.fromkeys(self.column_types, pa.string())
        table = pa_csv.read_csv(
            chunk.data,
            parse_options=pa_csv.ParseOptions(delimiter=self.delimiter, ignore_empty_lines=False),
            **self._read_options(chunk, as_text),
        )
        found = []
        for name, arrow_type in self.column_types.items():
            bad = first_unparsable(table.column(name), arrow_type)
            if bad is not None:
                found.append((bad[0], name, bad[1]))
        if not found:
            return read_error(self.path, f"cannot read the file as CSV: {error}")
        position, name, text = min(found)
        line = first_line + (1 if chunk.has_header else 0) + position
        kind = "true/false" if self.column_types[name] == pa.bool_() else "a number"
        return read_error(
            self.path,
            f"column {name!r} holds {text!r} at line {line}, where {kind} was expected (its "
            "first rows are numeric). Fix that value; write missing values as an empty cell "
            "or NA.",
        )

    def _split(self, block: Batch, first_row: int) -> Iterator[Batch]:
        """Views of at most ``batch_rows`` rows each."""
        for start in range(0, block.n_rows, self.batch_rows):
            stop = start + self.batch_rows
            y = None if block.y is None else block.y[start:stop]
            yield Batch(block.X[start:stop], y, first_row + start)
