"""Arrow IPC files (Feather version 2, ``DataFrame.to_feather``), read batch by batch.

Both of Arrow's IPC layouts are read: the file format (``ARROW1``, what Feather writes)
and the stream format. One record batch is decoded at a time (a batch holds what the
writer put in it: ``to_feather`` writes 64K rows per batch), so memory does not grow with
the file. The file is read, not memory-mapped: a file truncated by another program while
mapped would end the process with SIGBUS.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa

from stablefit.errors import StablefitInputError
from stablefit.io.schema import NoRowsError
from stablefit.io.signatures import START_BYTES, misnamed_signature

FILE_MAGIC = b"ARROW1"
STREAM_CONTINUATION = b"\xff\xff\xff\xff"
FORMAT = "an Arrow IPC (Feather) file"

# Rows read up front to describe non-numeric columns in messages.
SAMPLE_ROWS = 1000


def unreadable(path: Path, error: BaseException) -> StablefitInputError:
    """An Arrow IPC file that cannot be opened or decoded, with the fix."""
    if isinstance(error, OSError) and error.strerror:
        return StablefitInputError(
            f"{path}: cannot read the file ({error.strerror}); check that it exists and is "
            "readable."
        )
    return StablefitInputError(
        f"{path}: not a readable Arrow IPC (Feather) file ({error}); the file is damaged or "
        "cut short: write it again."
    )


@contextmanager
def decoding(path: Path) -> Iterator[None]:
    """Errors of pyarrow's IPC reader (damaged buffers, unsupported types) as input errors."""
    try:
        yield
    except (pa.ArrowException, OSError, UnicodeDecodeError) as error:
        raise unreadable(path, error) from None


def _layout(path: Path) -> str:
    """``"file"`` or ``"stream"``, from the file's first bytes; an error naming what the
    file is otherwise (Feather version 1, a CSV or Parquet file, ...)."""
    try:
        with open(path, "rb") as stream:
            start = stream.read(START_BYTES)
    except OSError as error:
        raise unreadable(path, error) from None
    if not start:
        raise StablefitInputError(f"{path}: the file is empty (0 bytes); expected {FORMAT}.")
    if start.startswith(FILE_MAGIC):
        return "file"
    if start.startswith(STREAM_CONTINUATION):
        return "stream"
    signature = misnamed_signature(start)
    if signature is not None:
        what, fix = signature
        raise StablefitInputError(f"{path}: the file is {what}, not Arrow IPC; {fix}.")
    raise unreadable(path, ValueError("it starts with neither ARROW1 nor an IPC stream message"))


@contextmanager
def opened(path: Path) -> Iterator[tuple[pa.Schema, Iterator[pa.RecordBatch]]]:
    """The file's schema and its record batches, decoded one at a time while open."""
    layout = _layout(path)
    with decoding(path):
        handle = pa.OSFile(str(path))
    with handle:
        with decoding(path):
            if layout == "file":
                file_reader = pa.ipc.open_file(handle)
                schema = file_reader.schema
                decoded = (file_reader.get_batch(i) for i in range(file_reader.num_record_batches))
            else:
                stream_reader = pa.ipc.open_stream(handle)
                schema = stream_reader.schema
                decoded = iter(stream_reader)

        def batches() -> Iterator[pa.RecordBatch]:
            while True:
                with decoding(path):
                    batch = next(decoded, None)
                if batch is None:
                    return
                yield batch

        yield schema, batches()


def column_names(path: Path) -> list[str]:
    """The names of the file's columns, from its schema."""
    with opened(path) as (schema, _):
        return [str(name) for name in schema.names]


def record_batches(path: Path, columns: list[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
    """The file's rows in order, as record batches of the ``columns`` of at most
    ``batch_rows`` rows (slices of the file's own batches: no copy)."""
    with opened(path) as (_, batches):
        for batch in batches:
            selected = batch.select(columns)
            for start in range(0, batch.num_rows, batch_rows):
                yield selected.slice(start, batch_rows)


def read_sample(path: Path) -> pa.RecordBatch:
    """The file's first rows, with its column names and types."""
    with opened(path) as (schema, batches):
        for batch in batches:
            if batch.num_rows:
                return batch.slice(0, SAMPLE_ROWS)
    raise NoRowsError(f"{path}: the file has columns but no rows.", schema.names)
