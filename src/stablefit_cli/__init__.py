"""The ``stablefit`` command's launcher: Ctrl-C and SIGTERM are handled from its first
millisecond on, before the package and its libraries (NumPy, pyarrow, numba) are imported.

It lives outside the ``stablefit`` package because importing that package already imports
NumPy: an interrupt during those 0.2 s would otherwise end in a traceback.
"""

import _signal  # the C module: `signal` builds enums first, which takes milliseconds
import os
import sys


def run() -> None:
    """Import and run :func:`stablefit.cli.main.run`; an interrupt meanwhile ends quietly."""
    try:
        from stablefit.cli.main import run as run_command
    except KeyboardInterrupt:
        _stop("interrupted", 128 + _signal.SIGINT)
    except SystemExit:
        raise
    except BaseException as error:  # SIGTERM, SIGHUP (see below), or a broken install
        if getattr(error, "signum", None) is None:
            raise
        _stop(f"stopped by signal {error.signum}", 128 + error.signum)
    run_command()


class _Stopped(BaseException):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_stopped(signum: int, frame: object) -> None:
    raise _Stopped(signum)


def _stop(what: str, code: int) -> None:
    try:
        sys.stderr.write(f"stablefit: {what}; no output file was written.\n")
        sys.stderr.flush()
    finally:
        os._exit(code)


for _signum in (_signal.SIGTERM, _signal.SIGHUP):
    _signal.signal(_signum, _raise_stopped)
