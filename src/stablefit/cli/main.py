"""Entry point of the ``stablefit`` command.

Each command module exposes ``register(subparsers)``; it adds its parser and sets
``handler`` to a function ``(args) -> int`` returning the exit code. Bad input raises
:class:`~stablefit.errors.StablefitInputError`, which becomes a one-line message on
stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import sys
from collections.abc import Sequence
from importlib import import_module

from threadpoolctl import threadpool_limits

from stablefit import __version__
from stablefit.errors import StablefitInputError

COMMAND_MODULES = ("fit", "doctor", "train")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stablefit",
        description="Why is my loss NaN? Predict it, guard against it, and fit exactly.",
    )
    parser.add_argument("--version", action="version", version=f"stablefit {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        import_module(f"stablefit.cli.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except StablefitInputError as error:
        print(f"stablefit {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"stablefit {args.command}: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """The ``stablefit`` command: :func:`main` in a process of its own, which it ends.

    The objects of the libraries imported by then (NumPy, SciPy, numba, pyarrow) live as
    long as the process, so they are frozen out of the garbage collector's passes, and the
    process ends without Python's teardown of those libraries: the two took 0.25 s, a
    tenth of ``stablefit fit`` on a 1 GB file. Everything the command writes is flushed
    first; its files are closed by then (written atomically).
    """
    gc.freeze()
    if "OPENBLAS_NUM_THREADS" not in os.environ:
        # One BLAS thread per call: the command spreads its blocks over the cores itself,
        # and OpenBLAS's idle threads spin on a core for a while after they start (SciPy's
        # load in the middle of reading a file), which cost `stablefit doctor` 5%. The
        # variable reaches the libraries loaded later; threadpoolctl those loaded already.
        os.environ["OPENBLAS_NUM_THREADS"] = "1"
        threadpool_limits(limits=1, user_api="blas")
    code = main()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        # The reader of a pipe may have gone, as with `| head`.
        with contextlib.suppress(BrokenPipeError):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
