"""Atomic output files: a reader sees the old file or the complete new one, never a part.

Every file stablefit writes goes through :func:`write_bytes_atomic`: the data go to a
temporary file in the same directory, are flushed to disk, and the temporary file then
replaces the target in one ``os.replace``. On any error the temporary file is removed and
an existing target is left as it was.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from stablefit.errors import StablefitInputError


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path.

    Raises
    ------
    StablefitInputError
        When the directory does not exist, ``path`` is a directory, or the file cannot be
        written (permissions, disk full); nothing is left behind.
    """
    target = Path(path)
    directory = target.parent
    if not directory.is_dir():
        raise StablefitInputError(f"{target}: cannot write, directory {directory} does not exist.")
    if target.is_dir():
        raise StablefitInputError(f"{target}: is a directory; give a file name to write.")
    try:
        handle, temporary = tempfile.mkstemp(
            dir=directory, prefix=f".{target.name}.", suffix=".tmp"
        )
    except OSError as error:
        raise StablefitInputError(f"{target}: cannot write ({error.strerror}).") from None
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        # mkstemp creates the file readable by its owner only; give it the usual mode.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, target)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(error, OSError):
            raise StablefitInputError(f"{target}: cannot write ({error.strerror}).") from None
        raise
    return target


def write_text_atomic(path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`write_bytes_atomic`)."""
    return write_bytes_atomic(path, text.encode(encoding))
