"""Ctrl-C and SIGTERM end a run with one line and no file, from the launcher's first
millisecond on: also while NumPy, pyarrow and numba are still being imported."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

# The interpreter's own start-up (site and .pth files) comes before any stablefit code,
# and then the launcher's import (a millisecond, which arms the handlers): the child says
# when it is past them, and the signal is sent that much later, while the package and its
# libraries are imported.
LAUNCH = (
    "import os, sys, stablefit_cli; os.write(1, b'ready\\n'); "
    "sys.argv = ['stablefit', *sys.argv[1:]]; stablefit_cli.run()"
)


@pytest.mark.parametrize(
    ("signum", "delay"),
    [
        (signal.SIGINT, 0.005),
        (signal.SIGINT, 0.05),
        (signal.SIGINT, 0.2),
        (signal.SIGTERM, 0.02),
        (signal.SIGTERM, 0.15),
    ],
)
def test_a_signal_while_starting_is_one_line(signum, delay, numeric_houses_csv, tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, "fit", numeric_houses_csv, "--target", "price",
         "--save", "m.json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )  # fmt: skip
    assert process.stdout.readline() == "ready\n"
    try:
        process.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    if process.returncode == 0:  # it finished first (a very fast machine): nothing to see
        return
    assert process.returncode == 128 + signum, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "m.json").exists()
