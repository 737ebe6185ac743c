"""The ``stablefit`` command's launcher: Ctrl-C and SIGTERM are handled from its first
millisecond on, before the package and its libraries (NumPy, pyarrow, numba) are imported.

It lives outside the ``stablefit`` package because importing that package and the command's
entry point comes first (an interrupt then would end in a traceback), and the entry point
imports the command's libraries, 0.2 s or more, once its own handlers are armed. An
interrupt that lands inside an extension module's initialization can surface as an
ImportError instead of KeyboardInterrupt: the signal handlers remember that a signal came.
"""

import _signal  # the C module: `signal` builds enums first, which takes milliseconds
import os
import sys

received: list[int] = []
# Until run() is inside its try, a signal is only noted (run() then stops at once).
running: list[bool] = []


def _on_signal(signum: int, frame: object) -> None:
    received.append(signum)
    if running:
        raise KeyboardInterrupt


def run() -> None:
    """Import and run :func:`stablefit.cli.main.run`; an interrupt meanwhile ends quietly."""
    try:
        running.append(True)
        if received:
            raise KeyboardInterrupt
        from stablefit.cli.main import run as run_command
    except BaseException:
        if not received:
            raise
        name = {_signal.SIGINT: "interrupted"}.get(received[0], f"stopped by signal {received[0]}")
        try:
            sys.stderr.write(f"stablefit: {name}; no output file was written.\n")
            sys.stderr.flush()
        finally:
            os._exit(128 + received[0])
    run_command()


for _signum in (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP):
    _signal.signal(_signum, _on_signal)
