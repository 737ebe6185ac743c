"""CSV and TSV files (optionally gzip- or zstd-compressed) read in bounded, parallel chunks.

The header and the column types come from the first block, read with
:func:`pyarrow.csv.open_csv`. Each pass then cuts the file at line breaks into chunks of a
few MiB and parses them on a small thread pool: a chunk of plain decimal
numbers with the compiled parser of :mod:`stablefit.io.csv_numbers` (four times as fast
per core), any other chunk with :func:`pyarrow.csv.read_csv`, every numeric column
straight into float64. At most ``workers + 1`` chunks are in flight, so memory does not
grow with the file, and the chunks are handed on in file order so row numbers stay exact.
Every file is read as a stream into the chunks' buffers (a memory map would end the
process with SIGBUS if another program truncated the file while it is read); a file that
changes while it is read (its size, inode or modification time) is an error naming it,
as is a compressed file that is cut short or not compressed at all.

Blank lines between rows are kept as rows of missing values rather than skipped: that
keeps every row's file line number right, and a blank line shows up as missing values at
its line instead of vanishing silently. Blank lines at the end of the file are no rows (as
for pandas and pyarrow). Quoted values must not contain line breaks (the file is
cut into chunks at line breaks): such a value is an error naming its line. The file must be
UTF-8 (ASCII is); other bytes in its header or its values are an error naming the line.
"""

from __future__ import annotations

import codecs
import contextlib
import gzip
import zlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

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
from stablefit.io.schema import Batch, NoRowsError, Schema
from stablefit.io.signatures import file_signature
from stablefit.parallel import default_workers

# What reading a file or its decompression can raise: each becomes a message naming it.
READ_ERRORS = (OSError, EOFError, zlib.error, pa.ArrowException)
# Bytes of the file's start used to read the header and infer column types.
SNIFF_BYTES = 1 << 20
# Block size of pyarrow's parser inside a chunk; larger blocks parse more slowly.
PARSE_BLOCK_BYTES = 1 << 20
# Chunk sizes: about batch_rows rows, within these bounds.
MIN_CHUNK_BYTES = 1 << 20
MAX_CHUNK_BYTES = 4 << 20
# A line longer than this (or a file without "\n" line breaks) is refused, not buffered.
MAX_LINE_BYTES = 64 << 20
# A header with more columns than this is refused before pyarrow reads it: its parser keeps
# per-column state (20,000 columns: 0.5 s and 0.2 GB; 5 million: beyond 12 GB).
MAX_FILE_COLUMNS = 20_000
MAX_WORKERS = 4
# The header is line 1, so data row i (0-based) is on line i + 2.
FIRST_DATA_LINE = 2
NEWLINE_BYTE = ord("\n")
QUOTE_BYTE = ord('"')
QUOTED_LINE_BREAK = (
    "line {line} starts a quoted value that runs over a line break; stablefit reads one "
    "row per line: remove the line breaks inside values (or the stray quote)."
)


@dataclass(frozen=True)
class Chunk:
    """A run of whole lines of the file; the first chunk starts with the header line."""

    data: pa.Buffer
    has_header: bool
    # The buffer ``data`` lies in, free for a later chunk once this one is parsed.
    storage: bytearray | None = None


def after_last_line(buffer: bytearray, end: int) -> int:
    """Where the last line with content before ``end`` ends, its line break included:
    the blank lines after it left out (0 when there are only blank lines)."""
    content = end
    while content and buffer[content - 1] in b"\r\n":
        content -= 1
    if content == 0:
        return 0
    line_break = buffer.find(b"\n", content, end)
    return end if line_break < 0 else line_break + 1


class ChunkParseError(Exception):
    """Raised in a worker; the reader turns it into a message naming the line."""

    def __init__(self, error: pa.ArrowInvalid, invalid_row: pa_csv.InvalidRow | None):
        super().__init__(str(error))
        self.error = error
        self.invalid_row = invalid_row


COMMENT_FIX = (
    "looks like a comment: stablefit reads the first line as the header and every other "
    "line as data, with no comment lines. Delete the comment lines (e.g. grep -v '^#' "
    "in.csv > out.csv, or pandas.read_csv(path, comment='#').to_csv(new_path, index=False))."
)


def read_error(path: Path, message: str) -> StablefitInputError:
    return StablefitInputError(f"{path}: {message}")


def ragged_row_error(path: Path, line: int, row: pa_csv.InvalidRow) -> StablefitInputError:
    if row.text.count('"') % 2:
        return read_error(path, QUOTED_LINE_BREAK.format(line=line))
    text = row.text if len(row.text) <= 80 else row.text[:77] + "..."
    if row.text.lstrip().startswith("#"):
        return read_error(path, f"line {line}, {text!r}, {COMMENT_FIX}")
    return read_error(
        path,
        f"line {line} has {row.actual_columns} field{'' if row.actual_columns == 1 else 's'} "
        "where the header has "
        f"{row.expected_columns}: {text!r}. Fix that line (a stray or missing delimiter, "
        "or an unquoted delimiter inside a value).",
    )


def long_line_message(size: int) -> str:
    return (
        f"no line break in {size >> 20} MiB; lines must end with '\\n' (or '\\r\\n') and "
        "be shorter than that."
    )


def read_into(stream: BinaryIO, view: memoryview) -> int:
    """Fill ``view`` from ``stream``; fewer bytes only at the end of the stream."""
    filled = 0
    while filled < len(view):
        count = stream.readinto(view[filled:])
        if not count:
            break
        filled += count
    return filled


def take_buffer(free: list[bytearray], size: int) -> bytearray:
    """A buffer of at least ``size`` bytes from ``free`` (dropping those too small), else a
    new one with room for the partial lines that later chunks start with."""
    while free:
        buffer = free.pop()
        if len(buffer) >= size:
            return buffer
    return bytearray(size + (size >> 6))


def read_first_block(path: Path, delimiter: str) -> pa.RecordBatch:
    """The header and the first rows, with the column types pyarrow infers from them.

    The block grows (up to :data:`MAX_LINE_BYTES`) until it holds the first lines whole.
    """
    start = read_start(path, SNIFF_BYTES)
    signature = file_signature(start)
    if signature is not None:
        what, fix = signature
        raise read_error(path, f"the file is {what}, not CSV text; {fix}.")
    check_header(path, start, delimiter)
    problem = text_problem(start, complete=len(start) < SNIFF_BYTES)
    if problem is not None and (problem[0] == 0 or "NUL" in problem[1]):
        raise read_error(path, BadLine(*problem).describe(1))  # names must be text
    block_size = SNIFF_BYTES
    while True:
        invalid: list[pa_csv.InvalidRow] = []
        try:
            reader = pa_csv.open_csv(
                str(path),
                read_options=pa_csv.ReadOptions(block_size=block_size, use_threads=False),
                parse_options=parse_options(delimiter, None if problem else invalid),
            )
            with reader:
                names = reader.schema.names  # decoded here: a quoted name may span lines
                batch = reader.read_next_batch()
            return batch
        except UnicodeDecodeError:  # in a name over lines, or past the first block
            if problem is not None:
                raise read_error(path, BadLine(*problem).describe(1)) from None
            raise read_error(
                path, "the header holds bytes that are not UTF-8 text; save the file as UTF-8."
            ) from None
        except StopIteration:
            raise NoRowsError(
                f"{path}: the file has a header line but no data rows; nothing to read.", names
            ) from None
        except pa.ArrowInvalid as error:
            # A block without one whole line: pyarrow says it straddles, or, for the
            # header line, that the block is empty.
            too_long = "straddl" in str(error) or (
                "Empty CSV" in str(error) and len(start) == SNIFF_BYTES
            )
            if too_long and block_size < MAX_LINE_BYTES:
                block_size *= 4
                continue
            if invalid:
                raise ragged_row_error(path, invalid[0].number, invalid[0]) from None
            if problem is not None:  # the line that is not text is the likely culprit
                raise read_error(path, BadLine(*problem).describe(1)) from None
            if too_long:
                raise read_error(path, long_line_message(MAX_LINE_BYTES)) from None
            if "Empty CSV file" in str(error):
                raise read_error(path, "the file holds no header line and no rows.") from None
            raise read_error(path, f"cannot read the file as CSV: {error}") from None
        except (OSError, pa.ArrowException) as error:
            raise unreadable(path, error) from None


def check_header(path: Path, start: bytes, delimiter: str) -> None:
    """Refuse, from the file's ``start``, a header of more than :data:`MAX_FILE_COLUMNS`
    columns (quoted delimiters count too: the limit is far from any real header), and a
    comma-separated file whose header is separated by semicolons instead, as spreadsheets
    write CSV where the decimal point is a comma."""
    header, line_break, _ = start.partition(b"\n")
    columns = header.count(delimiter.encode()) + 1
    if columns > MAX_FILE_COLUMNS:
        count = f"{columns:,}" if line_break else f"at least {columns:,}"
        raise read_error(
            path,
            f"its header names {count} columns; stablefit reads files of at most "
            f"{MAX_FILE_COLUMNS:,} columns (and fits at most 2,000 features). Write the "
            "columns you need to a narrower file first (e.g. pandas.read_csv(path, "
            "usecols=[...]).to_csv(...)).",
        )
    next_line = start[len(header) + 1 :].partition(b"\n")[0]
    commented = header.removeprefix(codecs.BOM_UTF8).lstrip().startswith(b"#")
    if commented and next_line.count(delimiter.encode()) + 1 > columns:
        shown = header.decode("utf-8-sig", "replace").strip()
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise read_error(path, f"line 1, {shown!r}, {COMMENT_FIX}")
    if delimiter == "," and columns == 1 and b";" in header:
        shown = header.decode("utf-8", "replace").strip()
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise read_error(
            path,
            f"its header {shown!r} is separated by ';', not ','. stablefit reads "
            "comma-separated .csv files with '.' as the decimal point (and tab-separated "
            ".tsv files): convert it, e.g. pandas.read_csv(path, sep=';', decimal=',')"
            ".to_csv(new_path, index=False).",
        )


def read_start(path: Path, size: int) -> bytes:
    """The first ``size`` bytes of the file's text (decompressed for ``.gz``, ``.zst``)."""
    try:
        with open_text(path) as stream:
            return stream.read(size)
    except READ_ERRORS as error:
        raise unreadable(path, error) from None


def open_text(path: Path) -> BinaryIO:
    """The file's bytes as a stream, decompressed for ``.gz`` and ``.zst``.

    Python's gzip reader checks the end of the stream (its length and CRC): pyarrow's
    returns the part of a truncated file it could decompress, without an error. pyarrow's
    zstd reader refuses a truncated stream.
    """
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if name.endswith(".zst"):
        return pa.CompressedInputStream(pa.OSFile(str(path)), "zstd")  # type: ignore[return-value]
    return open(path, "rb", buffering=0)


def unreadable(path: Path, error: BaseException) -> StablefitInputError:
    """A file the system or the decompressor refuses, with the fix."""
    text = str(error)
    if path.name.lower().endswith(".gz") and (
        isinstance(error, EOFError | zlib.error)
        or any(clue in text.lower() for clue in ("compressed", "inflate", "gzip", "zlib"))
    ):
        return read_error(
            path,
            f"not a complete gzip file ({text}); the file is cut short or not compressed: "
            "compress it again, or drop the .gz from its name if it is plain text.",
        )
    if path.name.lower().endswith(".zst") and any(
        clue in text.lower() for clue in ("zstd", "compressed")
    ):
        return read_error(
            path,
            f"not a complete zstd file ({text}); the file is cut short or not compressed: "
            "compress it again, or drop the .zst from its name if it is plain text.",
        )
    if isinstance(error, OSError) and error.strerror:
        text = error.strerror
    return read_error(path, f"cannot read the file ({text}); check that it exists and is readable.")


def read_sample(path: Path, delimiter: str) -> pa.RecordBatch:
    """The header and the first block of a file that is not empty."""
    if file_state(path)[2] == 0:
        raise read_error(path, "the file is empty (0 bytes); expected a header line and rows.")
    return read_first_block(path, delimiter)


def file_state(path: Path) -> tuple[int, ...]:
    """What changes when another program writes the file: inode, size, modification time."""
    try:
        status = path.stat()
    except OSError as error:
        raise unreadable(path, error) from None
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)


def changed_error(path: Path) -> StablefitInputError:
    return read_error(
        path,
        "the file changed while it was being read (another program is writing it); run "
        "the command again once it is complete.",
    )


def text_problem(data: bytes, *, complete: bool) -> tuple[int, str] | None:
    """The first line (0-based) of ``data`` that is not UTF-8 text, and what is wrong."""
    if b"\x00" in data:
        position = data.index(b"\x00")
        return data.count(b"\n", 0, position), (
            "line {line} holds a NUL byte: this is not a text file, or it is UTF-16. Save "
            "the data as a UTF-8 CSV file."
        )
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        cut = error.reason == "unexpected end of data" and error.end == len(data)
        if cut and not complete:
            return None  # a character cut by the end of the block: the next block has the rest
        return data.count(b"\n", 0, error.start), (
            f"line {{line}} holds the byte 0x{data[error.start]:02x}, which is not UTF-8 "
            "text; save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8 FILE > NEW.csv)."
        )
    return None


def first_unbalanced_quote(text: np.ndarray) -> int:
    """The first line (0-based) with an odd number of double quotes: where a quoted value
    runs over a line break."""
    breaks = np.flatnonzero(text == NEWLINE_BYTE)
    quotes = np.flatnonzero(text == QUOTE_BYTE)
    per_line = np.bincount(np.searchsorted(breaks, quotes), minlength=breaks.size + 1)
    odd = np.flatnonzero(per_line % 2)
    return int(odd[0]) if odd.size else 0


class BadLine(Exception):
    """A line of a chunk that cannot be read (raised in a worker): its 0-based position in
    the chunk, and the message with a ``{line}`` placeholder for its file line."""

    def __init__(self, line_in_chunk: int, message: str) -> None:
        super().__init__(message)
        self.line_in_chunk = line_in_chunk
        self.message = message

    def describe(self, first_line: int) -> str:
        return self.message.format(line=first_line + self.line_in_chunk)


def parse_options(delimiter: str, invalid: list[pa_csv.InvalidRow] | None) -> pa_csv.ParseOptions:
    """pyarrow's options; ragged rows are kept in ``invalid`` unless it is None (for text
    that is not UTF-8, which pyarrow cannot hand to a Python handler)."""

    def keep_first(row: pa_csv.InvalidRow) -> str:
        invalid.append(row)  # type: ignore[union-attr]
        return "error"

    return pa_csv.ParseOptions(
        delimiter=delimiter,
        ignore_empty_lines=False,
        invalid_row_handler=None if invalid is None else keep_first,
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
    # The file as it was opened: every pass checks that it is still the same.
    state: tuple[int, ...] | None = None

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
        state = file_state(path)
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
            state=state,
        )

    # -- one pass -------------------------------------------------------------------------

    def batches(self) -> Iterator[Batch]:
        rows = 0
        # Buffers of parsed chunks, filled again with later ones: a new buffer for each
        # chunk was zero-filled while holding the GIL, and its pages faulted in and handed
        # back to the system, every 4 MiB.
        free: list[bytearray] = []
        with ThreadPoolExecutor(self.workers) as pool:
            pending: deque[tuple[Chunk, Future[Batch]]] = deque()
            try:
                for chunk in self._all_chunks(free):
                    pending.append((chunk, pool.submit(self._parse, chunk)))
                    if len(pending) > self.workers:
                        block = self._parsed(*pending.popleft(), rows, free)
                        yield from self._split(block, rows)
                        rows += block.n_rows
                while pending:
                    block = self._parsed(*pending.popleft(), rows, free)
                    yield from self._split(block, rows)
                    rows += block.n_rows
            finally:
                for _, future in pending:
                    future.cancel()

    def _parsed(
        self, chunk: Chunk, future: Future[Batch], rows_before: int, free: list[bytearray]
    ) -> Batch:
        """The chunk's rows (see :meth:`_result`); its buffer then goes to ``free``."""
        block = self._result(chunk, future, rows_before)
        if chunk.storage is not None:
            free.append(chunk.storage)
        return block

    def _all_chunks(self, free: list[bytearray]) -> Iterator[Chunk]:
        """The file's chunks, read into buffers of ``free`` or new ones; an error if the
        file changes."""
        before = file_state(self.path)
        if self.state is not None and before != self.state:
            raise changed_error(self.path)
        try:
            with open_text(self.path) as stream:
                yield from self._chunks(stream, free)
        except READ_ERRORS as error:
            raise unreadable(self.path, error) from None
        if file_state(self.path) != before:
            raise changed_error(self.path)

    def _chunks(self, stream: BinaryIO, free: list[bytearray]) -> Iterator[Chunk]:
        """Whole lines, about ``chunk_bytes`` at a time, each in a buffer of its own until
        it is parsed: one of ``free`` (where the caller puts the buffers of parsed chunks)
        when one is large enough, else a new one.

        Each buffer is filled in place and handed to the parser without a copy; only the
        partial line at its end is copied into the next one.
        """
        rest = b""
        first = True
        while True:
            size = len(rest) + self.chunk_bytes
            buffer = take_buffer(free, size)
            view = memoryview(buffer)[:size]
            view[: len(rest)] = rest
            filled = len(rest) + read_into(stream, view[len(rest) :])
            if filled < size:  # the end of the file: its blank lines are no rows
                end = after_last_line(buffer, filled)
                if end:
                    yield Chunk(pa.py_buffer(view[:end]), first, buffer)
                return
            # Blank lines at the cut wait for the next chunk, in case the file ends there.
            cut = buffer.rfind(b"\n", 0, size) + 1
            cut = after_last_line(buffer, cut) or cut
            if cut == 0:
                if filled > MAX_LINE_BYTES:
                    raise read_error(self.path, long_line_message(filled))
                rest = bytes(view)
                free.append(buffer)
                continue
            rest = bytes(view[cut:])
            yield Chunk(pa.py_buffer(view[:cut]), first, buffer)
            first = False

    def _read_table(
        self,
        chunk: Chunk,
        column_types: dict[str, pa.DataType],
        invalid: list[pa_csv.InvalidRow] | None = None,
    ) -> pa.Table:
        """The chunk as an Arrow table; a line longer than a parser block gets one block."""
        for block_size in (PARSE_BLOCK_BYTES, chunk.data.size + 1):
            try:
                return pa_csv.read_csv(
                    chunk.data,
                    parse_options=parse_options(self.delimiter, invalid),
                    read_options=pa_csv.ReadOptions(
                        column_names=list(self.file_names),
                        skip_rows=1 if chunk.has_header else 0,
                        use_threads=False,
                        block_size=block_size,
                    ),
                    convert_options=pa_csv.ConvertOptions(
                        column_types=column_types,
                        include_columns=list(column_types),
                        strings_can_be_null=True,
                    ),
                )
            except pa.ArrowInvalid as error:
                if "straddl" not in str(error) or block_size > chunk.data.size:
                    raise
        raise AssertionError("unreachable: the last block holds the whole chunk")

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
                with contextlib.suppress(ChunkParseError, BadLine):
                    odd = self._parse_with_arrow(Chunk(pa.py_buffer(parsed.odd_lines), False))
                    if odd.n_rows == parsed.odd_rows.size:
                        return parsed.completed(odd)
        return self._parse_with_arrow(chunk)

    def _parse_with_arrow(self, chunk: Chunk) -> Batch:
        """A chunk read by pyarrow (in a worker thread; ``first_row`` is set later)."""
        text = np.frombuffer(chunk.data, dtype=np.uint8)
        problem = None
        if text.size and (text.max() >= 0x80 or text.min() == 0):
            problem = text_problem(chunk.data.to_pybytes(), complete=True)
            if problem is not None and "NUL" in problem[1]:
                raise BadLine(*problem)
        invalid: list[pa_csv.InvalidRow] = []
        try:
            table = self._read_table(chunk, self.column_types, None if problem else invalid)
        except pa.ArrowInvalid as error:
            if problem is not None:  # the line that is not text is the likely culprit
                raise BadLine(*problem) from None
            raise ChunkParseError(error, invalid[0] if invalid else None) from None
        lines = int(np.count_nonzero(text == NEWLINE_BYTE))
        if text.size and text[-1] != NEWLINE_BYTE:
            lines += 1  # the last line of the file, without a line break
        if table.num_rows < lines - chunk.has_header:
            raise BadLine(first_unbalanced_quote(text), QUOTED_LINE_BREAK)
        target_name = self.schema.target_name
        return batch_from_arrow(
            [table.column(name) for name in self.schema.feature_names],
            None if target_name is None else table.column(target_name),
            0,
        )

    def _result(self, chunk: Chunk, future: Future[Batch], rows_before: int) -> Batch:
        """The chunk's rows, or an error naming the file line at fault."""
        try:
            return future.result()
        except BadLine as failure:
            first_line = 1 if chunk.has_header else rows_before + FIRST_DATA_LINE
            raise read_error(self.path, failure.describe(first_line)) from None
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
        table = self._read_table(chunk, as_text, [])
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
