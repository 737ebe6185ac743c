"""Atomic output files: a reader sees the old file or the complete new one, never a part.

Every file stablefit writes goes through a :class:`StagedFile`: the data go to a
temporary file in the same directory and are flushed to disk; :meth:`StagedFile.commit`
then puts it in place of the target in one ``os.replace``, and :meth:`StagedFile.discard`
removes it, leaving an existing target as it was. :func:`open_atomic` does both for one
file; the command line stages all of a run's files and commits them together at its end
(:mod:`stablefit.cli.outputs`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from stablefit.errors import StablefitInputError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def cannot_write(target: str | os.PathLike[str], error: OSError) -> StablefitInputError:
    """The message for a file that cannot be written, with the fix for the usual causes."""
    fixes = {
        "ENOSPC": "free some space or write elsewhere",
        "EDQUOT": "free some space or write elsewhere",
        "EACCES": "choose a directory you may write to",
        "EPERM": "choose a directory you may write to",
        "EROFS": "the file system is read-only; write elsewhere",
        "EPIPE": "the program reading it stopped first",
    }
    reason = error.strerror or type(error).__name__
    fix = fixes.get(_errno_name(error), "choose another path")
    return StablefitInputError(f"{target}: cannot write ({reason}); {fix}.")


def _errno_name(error: OSError) -> str:
    return errno.errorcode.get(error.errno or 0, "")


class StagedFile:
    """The future content of ``path``, in a temporary file beside it until committed.

    Raises
    ------
    StablefitInputError
        When the directory does not exist, ``path`` is a directory, or the file cannot be
        written (permissions, disk full); nothing is left behind.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.target = Path(path)
        directory = self.target.parent
        if not directory.is_dir():
            raise StablefitInputError(
                f"{self.target}: cannot write, directory {directory} does not exist."
            )
        if self.target.is_dir():
            raise StablefitInputError(f"{self.target}: is a directory; give a file name to write.")
        try:
            handle, self.temporary = tempfile.mkstemp(
                dir=directory, prefix=f".{self.target.name}.", suffix=".tmp"
            )
        except OSError as error:
            raise cannot_write(self.target, error) from None
        self.stream: BinaryIO = os.fdopen(handle, "wb")

    def finish(self) -> None:
        """Flush the content to disk (errors such as a full disk surface here)."""
        try:
            if not self.stream.closed:
                self.stream.flush()
                os.fsync(self.stream.fileno())
                self.stream.close()
        except OSError as error:
            self.discard()
            raise cannot_write(self.target, error) from None

    def commit(self) -> None:
        """Put the complete file in place of the target."""
        self.finish()
        try:
            # mkstemp makes the file private to its owner; give it the mode of any new file.
            os.chmod(self.temporary, 0o666 & ~_current_umask())
            os.replace(self.temporary, self.target)
        except OSError as error:
            self.discard()
            raise cannot_write(self.target, error) from None

    def discard(self) -> None:
        """Remove the temporary file; the target stays as it was."""
        with contextlib.suppress(OSError):
            self.stream.close()
        with contextlib.suppress(OSError):
            os.unlink(self.temporary)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM wait (when this is the main thread) until the block is done.

    The Python handlers are swapped for one that only records the signal, which is raised
    again on the way out. Blocking the signals in this thread's mask would not do: the
    kernel then hands a signal sent to the process to another thread (BLAS's, Arrow's),
    and the interpreter still runs the handler here, in the middle of the block.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []
    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(signum)
        if handler not in (signal.SIG_IGN, None):
            previous[signum] = signal.signal(signum, lambda signum, _: arrived.append(signum))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(arrived):
            signal.raise_signal(signum)


@contextlib.contextmanager
def open_atomic(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """A binary stream whose content replaces ``path`` only once the block completes.

    Raises
    ------
    StablefitInputError
        When the directory does not exist, ``path`` is a directory, or the file cannot be
        written (permissions, disk full); nothing is left behind.
    """
    staged = None
    try:
        # A signal just after the temporary file's creation would otherwise find no owner.
        with signals_held():
            staged = StagedFile(path)
        yield staged.stream
    except BaseException as error:
        if staged is not None:
            staged.discard()
        if isinstance(error, OSError):
            raise cannot_write(path, error) from None
        raise
    staged.commit()


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`open_atomic`) and return the path."""
    with open_atomic(path) as stream:
        stream.write(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`open_atomic`) and return the path."""
    return write_bytes_atomic(path, text.encode(encoding))
