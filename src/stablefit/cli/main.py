"""Entry point of the ``stablefit`` command, and its one promise about how a run ends.

Each command module exposes ``register(subparsers)``; it adds its parser (file arguments
through :mod:`stablefit.cli.outputs`) and sets ``handler`` to a function ``(args) -> int``
returning the exit code. The handler writes its files through ``args.outputs``, which
:func:`main` commits once the handler has succeeded. :data:`COMMANDS` says which module
defines which command: a run imports only the module of the command it names.

However a run ends, it ends in one line on stderr, never a traceback:

- the command's own exit code (0, or 1 for ``doctor``'s and ``train``'s verdicts);
- 2 for anything the user can cause or meet: bad input (a
  :class:`~stablefit.errors.StablefitInputError`, whose message names the file, the place
  and the fix), files that cannot be read or written, a full disk, too little memory;
- 130 for Ctrl-C (SIGINT), 128 + the signal's number for SIGTERM and SIGHUP;
- 70 for anything unexpected: a bug, said as such, with the traceback written to a file.

On any exit but success no output file of the run is left, nor any temporary file. A
signal that arrives while the files are put in place waits until they all are; the run
then exits as interrupted and says that its files were written.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import gc
import logging
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from importlib import import_module
from typing import NoReturn

from stablefit import __version__
from stablefit.cli.outputs import Outputs, declared_paths, plan_outputs, silence_stdout
from stablefit.errors import StablefitInputError
from stablefit.report.plain import visible

#: Each command, and the module under ``stablefit.cli`` that defines and runs it.
COMMANDS = {
    "fit": "fit",
    "predict": "fit",
    "doctor": "doctor",
    "demo": "doctor",
    "train": "train",
}
EXIT_INPUT = 2
EXIT_BUG = 70
EXIT_INTERRUPTED = 128 + signal.SIGINT
FULL_DISK = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class Terminated(BaseException):
    """SIGTERM or SIGHUP: the run stops as for Ctrl-C, leaving no files behind."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# Signals received by this process's handlers. An interrupt that lands inside an extension
# module's import can surface as an ImportError rather than KeyboardInterrupt: with a
# signal recorded, an unexpected error is the interrupt's, not a bug.
RECEIVED: list[int] = []


def _terminate(signum: int, frame: object) -> None:
    RECEIVED.append(signum)
    raise Terminated(signum)


def _interrupt(signum: int, frame: object) -> None:
    RECEIVED.append(signum)
    raise KeyboardInterrupt


class OneLineParser(argparse.ArgumentParser):
    """argparse's parser, with a usage error on one line (where to find the usage
    instead of all of it before the error): ``stablefit fit: error: the following
    arguments are required: DATA, --target (see 'stablefit fit --help')``."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_INPUT, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


@functools.cache
def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or with ``command`` only of those its module defines.

    A command's module imports what the command runs on: building the parser for the
    command given alone spares the other commands' imports, 0.02-0.04 s of a small file's
    run. Built once per process:
    ``main`` called again in the same process (a notebook, the fuzz suite) would otherwise
    spend 10 ms on each call in argparse's message look-ups.
    """
    parser = OneLineParser(
        prog="stablefit",
        description="Why is my loss NaN? Predict it, guard against it, and fit exactly.",
    )
    parser.add_argument("--version", action="version", version=f"stablefit {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    modules = dict.fromkeys(COMMANDS.values() if command is None else [COMMANDS[command]])
    for name in modules:
        import_module(f"stablefit.cli.{name}").register(subparsers)
    return parser


def command_named(argv: Sequence[str]) -> str | None:
    """The command ``argv`` starts with, or None when it starts otherwise (``--help``,
    ``--version``, a misspelt command: what the parser of every command answers)."""
    return argv[0] if argv and argv[0] in COMMANDS else None


def say(command: str, text: str) -> None:
    """One line on stderr, its user-given parts made visible (no escapes, no newlines)."""
    with contextlib.suppress(OSError, ValueError):
        print(f"{command}: {visible(text)}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code (see the module's docstring)."""
    command = "stablefit"
    outputs = Outputs()
    try:
        with _one_line_warnings(lambda: command):
            words = sys.argv[1:] if argv is None else list(argv)
            args = build_parser(command_named(words)).parse_args(words)
            command = f"stablefit {args.command}"
            outputs = plan_outputs(
                declared_paths(args, "declared_inputs"), declared_paths(args, "declared_outputs")
            )
            args.outputs = outputs
            code = int(args.handler(args))
            _flush_stdout()
            outputs.commit()
            return code
    except BrokenPipeError:
        # The reader of the standard output (``| head``) stopped early: its choice. The
        # command printed its report last, so its files are complete.
        silence_stdout()
        return _commit_after_stdout_left(command, outputs)
    except StablefitInputError as error:
        outputs.discard()
        say(command, f"error: {error}")
        return EXIT_INPUT
    except KeyboardInterrupt:
        outputs.discard()
        say(command, f"interrupted; {_what_was_written(outputs)}")
        return EXIT_INTERRUPTED
    except Terminated as stop:
        outputs.discard()
        say(command, f"stopped by {stop}; {_what_was_written(outputs)}")
        return 128 + stop.signum
    except SystemExit:
        outputs.discard()
        raise
    except (OSError, MemoryError, RecursionError) as error:
        outputs.discard()
        say(command, f"error: {environment_message(error)}")
        return EXIT_INPUT
    except Exception as error:  # the promise: a bug is said to be one, without a traceback
        outputs.discard()
        if RECEIVED:
            say(command, f"interrupted; {_what_was_written(outputs)}")
            return 128 + RECEIVED[0]
        say(command, bug_message(error))
        return EXIT_BUG


def _flush_stdout() -> None:
    """The report's last bytes, so that a full disk fails the run before files are put."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as error:
        raise StablefitInputError(environment_message(error)) from None


def _what_was_written(outputs: Outputs) -> str:
    if outputs.committed:
        return "it came after the output files were written, which are complete."
    return "no output file was written."


def _commit_after_stdout_left(command: str, outputs: Outputs) -> int:
    try:
        outputs.commit()
    except StablefitInputError as error:
        say(command, f"error: {error}")
        return EXIT_INPUT
    return 0


def environment_message(error: BaseException) -> str:
    """What a file, the disk or the memory refused, and what to do about it."""
    if isinstance(error, MemoryError):
        return (
            "out of memory; close other programs, or give stablefit fewer rows or "
            "columns at a time."
        )
    if isinstance(error, RecursionError):
        return "the input is nested too deeply to read; check the file's content."
    assert isinstance(error, OSError)
    name = getattr(error, "filename", None)
    if name is None and error.errno in FULL_DISK:
        # Every file stablefit writes names itself in its errors: this is the report.
        return (
            f"cannot write the standard output ({error.strerror}); free some space or "
            "redirect it elsewhere."
        )
    where = f"{name}: " if name else ""
    reason = error.strerror or str(error) or type(error).__name__
    return f"{where}{reason}; check the file and the disk, then run the command again."


def bug_message(error: BaseException) -> str:
    """A short line for an unexpected exception; the traceback goes to a file."""
    where = write_traceback(error)
    saved = f"The traceback is in {where}" if where else "No traceback file could be written"
    return (
        f"internal error ({type(error).__name__}): this is a bug in stablefit "
        f"{__version__}, not a problem with your data. {saved}; please report it to the "
        "stablefit developers with that file and the command you ran."
    )


def write_traceback(error: BaseException) -> str | None:
    """Write the traceback to a new file in the temporary directory; return its path."""
    import tempfile
    import time
    import traceback

    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    header = f"stablefit {__version__}, Python {sys.version.split()[0]}\nargv: {sys.argv!r}\n\n"
    try:
        handle, path = tempfile.mkstemp(
            prefix=f"stablefit-bug-{time.strftime('%Y%m%d-%H%M%S')}-", suffix=".txt"
        )
        with os.fdopen(handle, "w", encoding="utf-8", errors="backslashreplace") as file:
            file.write(header + text)
    except OSError:
        return None
    return path


@contextlib.contextmanager
def _one_line_warnings(command: object) -> Iterator[None]:
    """Warnings on stderr as one line each, without the source line that raised them."""
    import warnings

    def show(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
        say(command(), f"warning: {message}")  # type: ignore[operator]

    saved = warnings.showwarning
    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = saved


def run() -> None:
    """The ``stablefit`` command: :func:`main` in a process of its own, which it ends.

    The objects of the libraries the command's module imports (NumPy, pyarrow, rich) live
    as long as the process, so they are frozen out of the garbage collector's passes, and
    the process ends without Python's teardown of those libraries: the two took 0.25 s, a
    tenth of ``stablefit fit`` on a 1 GB file. Everything the command writes is flushed
    first; its files are closed by then (written atomically).
    """
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _terminate)
    signal.signal(signal.SIGINT, _interrupt)
    code = EXIT_INTERRUPTED
    try:
        _import_command(sys.argv[1:])
        code = main()
        logging.shutdown()
    except SystemExit as stop:  # argparse: --help, --version, usage errors
        code = stop.code if isinstance(stop.code, int) else EXIT_INPUT * (stop.code is not None)
    except KeyboardInterrupt:
        say("stablefit", "interrupted; no output file was written.")
    except Terminated as stop:
        say("stablefit", f"stopped by {stop}; no output file was written.")
        code = 128 + stop.signum
    finally:
        for stream in (sys.stdout, sys.stderr):
            # The reader of a pipe may have gone, as with `| head`.
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(code)


def _import_command(argv: Sequence[str]) -> None:
    """Import the module of the command ``argv`` names, with one BLAS thread (see
    :func:`_one_blas_thread`) and without the garbage collector's passes over the objects of
    the libraries it loads (10 ms of a small file's run), then frozen out of later passes.
    An error is left to :func:`main`, which meets it again and says it in one line."""
    one_thread = _one_blas_thread()
    gc.disable()
    try:
        with contextlib.suppress(Exception):
            build_parser(command_named(argv))
    finally:
        gc.freeze()
        gc.enable()
    if one_thread:  # a BLAS that does not read the variable (MKL's)
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1, user_api="blas")


def _one_blas_thread() -> bool:
    """Ask for one BLAS thread unless the user chose (OPENBLAS_NUM_THREADS); whether asked.

    One BLAS thread per call: the command spreads its blocks over the cores itself, and
    OpenBLAS's idle threads spin on a core for a while after they start (SciPy's load in
    the middle of reading a file), which cost `stablefit doctor` 5%. Set before NumPy loads
    (this module does not import it), the variable keeps OpenBLAS from starting the other
    threads at all: starting them took 0.02-0.05 s of CPU.
    """
    if "OPENBLAS_NUM_THREADS" in os.environ:
        return False
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    return True


if __name__ == "__main__":
    run()
