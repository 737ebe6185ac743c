"""Atomic output files: a reader sees the old file or the complete new one, never a part.

Every file stablefit writes goes through :func:`open_atomic`: the data go to a temporary
file in the same directory, are flushed to disk, and the temporary file then replaces the
target in one ``os.replace``. On any error the temporary file is removed and an existing
target is left as it was.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from stablefit.errors import StablefitInputError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def open_atomic(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """A binary stream whose content replaces ``path`` only once the block completes.

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
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        # mkstemp makes the file private to its owner; give it the mode of any new file.
        os.chmod(temporary, 0o666 & ~_current_umask())
        os.replace(temporary, target)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(error, OSError):
            raise StablefitInputError(f"{target}: cannot write ({error.strerror}).") from None
        raise


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`open_atomic`) and return the path."""
    with open_atomic(path) as stream:
        stream.write(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`open_atomic`) and return the path."""
    return write_bytes_atomic(path, text.encode(encoding))
