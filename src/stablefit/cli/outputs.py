"""Where a command's files come from and go to: declared once, checked before any work.

Every file argument of a command is declared with :func:`add_input_argument` or
:func:`add_output_argument`. Before the command starts, :func:`plan_outputs` refuses an
output that is one of the inputs, another output, or (through a redirect) the standard
output, so that nothing the user gave can be overwritten. A command then writes its outputs
through the :class:`Outputs` it is handed (``args.outputs``), and the entry point commits
them all once the command has succeeded, or discards them all if it fails or is
interrupted: a run leaves either all its files or none, and never a temporary file.

How each output is written:

- a regular file (new or existing, also through a symlink): staged in a temporary file
  beside it, then put in place atomically (:class:`~stablefit.report.files.StagedFile`);
- ``-``: the standard output;
- a device, a named pipe, or a link to an open descriptor (``/dev/stdout``,
  ``/proc/self/fd/N``): written through, never replaced.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from stablefit.errors import StablefitInputError
from stablefit.report.files import StagedFile, cannot_write, signals_held

STDOUT = "-"
# Paths that name an open file descriptor: written through, whatever the descriptor is.
DESCRIPTOR_PREFIXES = ("/proc/", "/dev/fd/")
MAX_LINKS = 40


def _declare(
    role: str, parser: argparse.ArgumentParser, names: tuple[str, ...], options: dict[str, Any]
) -> None:
    action = parser.add_argument(*names, **options)
    label = action.option_strings[0] if action.option_strings else action.metavar or action.dest
    declared = [*(parser.get_default(role) or ()), (action.dest, str(label))]
    parser.set_defaults(**{role: declared})


def add_input_argument(parser: argparse.ArgumentParser, *names: str, **options: Any) -> None:
    """``parser.add_argument`` for a file the command reads (never written to)."""
    _declare("declared_inputs", parser, names, options)


def add_output_argument(parser: argparse.ArgumentParser, *names: str, **options: Any) -> None:
    """``parser.add_argument`` for a file the command writes (``-`` for stdout)."""
    _declare("declared_outputs", parser, names, options)


def declared_paths(args: argparse.Namespace, role: str) -> dict[str, tuple[str, str]]:
    """The paths given (or defaulted) for the declared arguments: dest -> (flag, path)."""
    paths = {}
    for dest, label in getattr(args, role, None) or ():
        value = getattr(args, dest, None)
        if value is not None:
            paths[dest] = (label, os.fspath(value))
    return paths


# -- what a path is -------------------------------------------------------------------------


def _identity(path: str) -> tuple[Any, ...]:
    """The same for two names of one file: its inode when it exists, else its real path."""
    try:
        status = os.stat(path)
    except OSError:
        return ("path", os.path.realpath(path))
    return ("inode", status.st_dev, status.st_ino)


def stdout_identity() -> tuple[Any, ...] | None:
    """The standard output's inode, or None when it has no descriptor (captured in tests)."""
    try:
        status = os.fstat(sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):
        return None
    return ("inode", status.st_dev, status.st_ino)


def _names_a_descriptor(path: str) -> bool:
    """Whether ``path`` is, or links to, a name of an open descriptor (``/dev/stdout``)."""
    current = os.path.abspath(path)
    for _ in range(MAX_LINKS):
        if current.startswith(DESCRIPTOR_PREFIXES):
            return True
        try:
            link = os.readlink(current)
        except OSError:
            return False
        current = os.path.normpath(os.path.join(os.path.dirname(current), link))
    return False


def input_files(path: str) -> list[str]:
    """The files an input names: itself, the files under a directory, or a glob's matches."""
    import glob

    if os.path.isdir(path):
        return [path] + [
            os.path.join(folder, name) for folder, _, names in os.walk(path) for name in names
        ]
    if not os.path.exists(path) and glob.has_magic(path):
        return glob.glob(path, recursive=True)
    return [path]


@dataclass(frozen=True)
class Destination:
    """One output: ``kind`` is "stdout", "stream" (written through) or "file" (atomic)."""

    flag: str
    path: str
    kind: str
    target: str  # where a "file" is put; the path itself otherwise
    identity: tuple[Any, ...] | None

    def describe(self) -> str:
        return f"{self.flag} {self.path}"


def destination(flag: str, path: str, stdout: tuple[Any, ...] | None) -> Destination:
    """What writing ``path`` means, or an error (exit 2) when it cannot be written."""
    if path == STDOUT:
        return Destination(flag, path, "stdout", path, stdout)
    if not path:
        raise StablefitInputError(f"{flag}: empty path; give a file name (or - for stdout).")
    try:
        status = os.stat(path)
    except FileNotFoundError:
        status = None  # a new file (or a link to one)
    except OSError as error:
        raise StablefitInputError(
            f"{flag} {path}: cannot write there ({error.strerror}); choose another path."
        ) from None
    identity = _identity(path)
    if status is not None and stat.S_ISDIR(status.st_mode):
        raise StablefitInputError(f"{flag} {path}: is a directory; give a file name to write.")
    if status is not None and (not stat.S_ISREG(status.st_mode) or _names_a_descriptor(path)):
        kind = "stdout" if stdout is not None and identity == stdout else "stream"
        return Destination(flag, path, kind, path, identity)
    target = os.path.realpath(path)
    directory = os.path.dirname(target)
    if not os.path.isdir(directory):
        raise StablefitInputError(
            f"{flag} {path}: cannot write, directory {directory} does not exist; create it "
            "or choose another path."
        )
    return Destination(flag, path, "file", target, identity)


def plan_outputs(
    inputs: dict[str, tuple[str, str]], outputs: dict[str, tuple[str, str]]
) -> Outputs:
    """The run's outputs, checked against its inputs and each other before any work.

    Raises
    ------
    StablefitInputError
        An output is an input (by any name: inode, symlink, hard link), two outputs are one
        file, or the standard output is redirected to an input or an output file.
    """
    stdout = stdout_identity()
    sources = {
        _identity(file): f"{flag} {file}" if flag.startswith("-") else f"the input {file}"
        for flag, path in inputs.values()
        if path != STDOUT
        for file in input_files(path)
    }
    if stdout is not None and stdout in sources:
        raise StablefitInputError(
            f"the standard output is redirected to {sources[stdout].removeprefix('the input ')}, "
            "which this command reads; redirect it to another file."
        )
    destinations: dict[str, Destination] = {}
    seen: dict[tuple[Any, ...], Destination] = {}
    for dest, (flag, path) in outputs.items():
        where = destination(flag, path, stdout)
        if where.identity in sources:
            raise StablefitInputError(
                f"{where.describe()}: is {sources[where.identity]}; writing it would destroy "
                "the data. Choose another output path."
            )
        if where.kind == "file" and stdout is not None and where.identity == stdout:
            raise StablefitInputError(
                f"{where.describe()}: is also where the standard output is redirected; "
                "choose another path, or write with - to the standard output."
            )
        key = ("stdout",) if where.kind == "stdout" else where.identity
        if key in seen and not _is_devnull(path):
            raise StablefitInputError(
                f"{seen[key].describe()} and {where.describe()} are the same "
                f"{'output' if where.kind == 'stdout' else 'file'}; give each its own path."
            )
        seen[key] = where
        destinations[dest] = where
    return Outputs(destinations)


def _is_devnull(path: str) -> bool:
    with contextlib.suppress(OSError):
        return os.path.samefile(path, os.devnull)
    return False


# -- writing --------------------------------------------------------------------------------


@dataclass
class Outputs:
    """A run's outputs: staged while the command works, committed or discarded at its end."""

    destinations: dict[str, Destination] = field(default_factory=dict)
    #: Whether the files are in place: a signal that waited for the commit comes after.
    committed: bool = False
    _staged: list[Any] = field(default_factory=list)

    def given(self, dest: str) -> bool:
        """Whether the output ``dest`` (the argument's dest, e.g. "json") was asked for."""
        return dest in self.destinations

    @property
    def uses_stdout(self) -> bool:
        """Whether an output goes to the standard output (the report then stays off it)."""
        return any(where.kind == "stdout" for where in self.destinations.values())

    def write_text(self, dest: str, text: str) -> None:
        """Stage ``text`` (UTF-8) as the whole content of the output ``dest``."""
        self.write_bytes(dest, text.encode("utf-8"))

    def write_bytes(self, dest: str, data: bytes) -> None:
        where = self.destinations[dest]
        if where.kind == "file":
            staged = self._stage(where.target)
            try:
                staged.stream.write(data)
            except OSError as error:
                raise cannot_write(where.path, error) from None
            return
        self._staged.append(_Pending(where, data))

    @contextlib.contextmanager
    def open(self, dest: str) -> Iterator[BinaryIO]:
        """A binary stream for a long output written as it is produced (predictions).

        A file is staged as with :meth:`write_text`; the standard output, a pipe or a device
        receive the data as they come.
        """
        where = self.destinations[dest]
        if where.kind == "file":
            yield self._stage(where.target).stream
            return
        if where.kind == "stdout":
            sys.stdout.flush()
            yield sys.stdout.buffer
            sys.stdout.buffer.flush()
            return
        try:
            stream = open(where.path, "wb")  # noqa: SIM115 (closed below, errors mapped)
        except OSError as error:
            raise cannot_write(where.path, error) from None
        with _mapped_errors(where), stream:
            yield stream

    def _stage(self, target: str) -> StagedFile:
        # A signal between the temporary file's creation and its registration here would
        # leave that file behind: the discard on the way out would not know it.
        with signals_held():
            staged = StagedFile(target)
            self._staged.append(staged)
        return staged

    def commit(self) -> None:
        """Write what waits for the standard output or a stream, then put files in place.

        What cannot be taken back (bytes sent to a pipe or a device) goes first, so that a
        failure there still leaves no file; the renames that follow do not fail in practice.
        Signals wait until the commit is done.
        """
        staged, self._staged = self._staged, []
        files = [item for item in staged if isinstance(item, StagedFile)]
        streams = [item for item in staged if not isinstance(item, StagedFile)]
        with signals_held():
            try:
                for item in (*files, *streams):
                    item.finish()
                for item in files:
                    item.commit()
                self.committed = bool(staged)
            except BaseException:
                for item in staged:
                    item.discard()
                raise

    def discard(self) -> None:
        """Remove every staged file: the run leaves nothing behind."""
        staged, self._staged = self._staged, []
        for item in staged:
            item.discard()


@dataclass
class _Pending:
    """Bytes for the standard output or a stream, sent at the commit."""

    where: Destination
    data: bytes

    def finish(self) -> None:
        if self.where.kind == "stdout":
            with reader_may_leave():
                sys.stdout.flush()
                sys.stdout.buffer.write(self.data)
                sys.stdout.buffer.flush()
            return
        with _mapped_errors(self.where), open(self.where.path, "wb") as stream:
            stream.write(self.data)

    def commit(self) -> None:
        """Nothing left to do: the bytes went out in :meth:`finish`."""

    def discard(self) -> None:
        """Nothing to remove."""


@contextlib.contextmanager
def reader_may_leave() -> Iterator[None]:
    """The standard output's reader may stop early (``| head``): its choice, not an error.

    What is left to print then goes nowhere, and the run goes on to commit its files.
    """
    try:
        yield
    except BrokenPipeError:
        silence_stdout()


def silence_stdout() -> None:
    """Send the rest of the standard output to the null device (its reader has gone)."""
    with contextlib.suppress(AttributeError, OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


@contextlib.contextmanager
def _mapped_errors(where: Destination) -> Iterator[None]:
    try:
        yield
    except OSError as error:
        raise cannot_write(where.path, error) from None
