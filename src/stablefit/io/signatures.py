"""What a data file's first bytes say it is, for a file whose name says otherwise: an
Excel workbook renamed ``.csv``, a Parquet file named ``.csv``, a CSV file named
``.parquet`` or ``.feather``. The error then names the format and the fix instead of the
symptom (a NUL byte in line 1, a Parquet footer without its magic bytes)."""

from __future__ import annotations

from pathlib import Path

READ_EXCEL = "pandas.read_excel(path).to_csv(new_path, index=False)"

# Leading bytes, what a file starting with them is, and the fix.
SIGNATURES = (
    (b"PK\x03\x04", "a ZIP archive (as an Excel .xlsx workbook is)",
     f"save the sheet as CSV, e.g. {READ_EXCEL}, or unzip it"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an Excel .xls workbook",
     f"save the sheet as CSV, e.g. {READ_EXCEL}"),
    (b"PAR1", "a Parquet file", "give it a name ending in .parquet"),
    (b"ARROW1", "an Arrow IPC (Feather) file", "give it a name ending in .feather or .arrow"),
    (b"FEA1", "a Feather version 1 file",
     "write it again as version 2, e.g. pyarrow.feather.write_feather("
     "pyarrow.feather.read_table(path), new_path)"),
    (b"\x1f\x8b", "gzip-compressed", "give it a name ending in .csv.gz or .tsv.gz"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed", "give it a name ending in .csv.zst or .tsv.zst"),
)  # fmt: skip

# Bytes read to tell text from a binary format.
START_BYTES = 4096


def file_signature(start: bytes) -> tuple[str, str] | None:
    """What a file beginning with ``start`` is and the fix, if its bytes say so."""
    for magic, what, fix in SIGNATURES:
        if start.startswith(magic):
            return what, fix
    return None


def not_parquet_signature(path: Path) -> tuple[str, str] | None:
    """What a file named as Parquet without Parquet's leading bytes is (see
    :func:`misnamed_signature`); None for a Parquet file (damaged or not) or unknown bytes."""
    try:
        with open(path, "rb") as stream:
            start = stream.read(START_BYTES)
    except OSError:
        return None
    return None if start.startswith(b"PAR1") else misnamed_signature(start)


def misnamed_signature(start: bytes) -> tuple[str, str] | None:
    """What a binary format's file beginning with ``start`` is when its bytes are not that
    format's: a format above, or text (a CSV file, most likely); None for unknown bytes."""
    known = file_signature(start)
    if known is not None:
        return known
    try:
        text = start.decode("utf-8")
    except UnicodeDecodeError:
        text = start[: start.rfind(b"\n") + 1].decode("utf-8", "replace")
        if "\ufffd" in text or not text:
            return None
    if "\x00" in text or not text.strip():
        return None
    return "text (a CSV file?)", "give it a name ending in .csv (or .tsv if tab-separated)"
