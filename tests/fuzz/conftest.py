"""The fuzz suite: hostile input, structure-aware, from hypothesis and from seeded generators.

Every test counts its cases here; the session ends with the counts per target, so that a
CI log shows how many cases ran (``pytest tests/fuzz -q`` prints them). A case is one
generated input run through the code under test.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from threadpoolctl import threadpool_limits

from stablefit.cli.main import main

from .choices import SeededChoices

CASES: Counter[str] = Counter()

# Derandomized: CI runs the same cases every time (a failure is reproducible from the log),
# and the database stays off so a run does not depend on the one before it.
settings.register_profile(
    "fuzz",
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def count_case(target: str) -> None:
    """One more case for ``target`` (fit, doctor, predict, train, parser, ...)."""
    CASES[target] += 1


def run_seeded(check: Callable[[SeededChoices], object], first_seed: int, count: int) -> None:
    """``check`` on ``count`` cases, each generated from its own seed: the same inputs on
    every run. A failure names its seed; ``SeededChoices(seed)`` makes its input again."""
    for seed in range(first_seed, first_seed + count):
        try:
            check(SeededChoices(seed))
        except AssertionError as error:
            raise AssertionError(f"seeded case {seed}: {error}") from error


@pytest.fixture(autouse=True, scope="package")
def _one_blas_thread() -> Iterator[None]:
    """One BLAS thread, as in the ``stablefit`` command (``stablefit.cli.main.run`` limits
    it before the command starts): the commands here run in this process, through
    :func:`stablefit.cli.main.main`, and OpenBLAS's idle threads spinning after each small
    solve would otherwise cost more than the command itself."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


COMMANDS = ("fit", "doctor", "predict", "train")


def pytest_terminal_summary(terminalreporter) -> None:
    if CASES:
        parts = ", ".join(f"{target} {n:,}" for target, n in sorted(CASES.items()))
        commands = sum(n for target, n in CASES.items() if target.split()[0] in COMMANDS)
        terminalreporter.write_line(
            f"fuzz cases: {sum(CASES.values()):,}, of which {commands:,} runs of the commands "
            f"{', '.join(COMMANDS)} ({parts})"
        )


@pytest.fixture(scope="package")
def model(tmp_path_factory) -> Path:
    """A model of y on x: generated tables often have an x column, so predict gets far."""
    folder = tmp_path_factory.mktemp("model")
    (folder / "train.csv").write_text("x,y\n1,3.5\n2,4\n3,9.25\n4,7\n5,6.5\n")
    path = folder / "model.json"
    assert main(["fit", str(folder / "train.csv"), "--target", "y", "--save", str(path)]) == 0
    return path


@pytest.fixture
def scratch(tmp_path) -> Iterator[Path]:
    """An empty folder for thousands of short-lived files: in memory where the system has
    a tmpfs at /dev/shm (each output is written with an fsync, a disk wait per case),
    else ``tmp_path``."""
    if not os.access("/dev/shm", os.W_OK):
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(dir="/dev/shm", prefix="stablefit-fuzz-") as folder:
        yield Path(folder)
