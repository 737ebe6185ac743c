"""The fuzz suite: hostile input, structure-aware, from hypothesis and from seeded generators.

Every test counts its cases here; the session ends with the counts per target, so that a
CI log shows how many cases ran (``pytest tests/fuzz -q`` prints them). A case is one
generated input run through the code under test.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, settings
from threadpoolctl import threadpool_limits

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


def pytest_terminal_summary(terminalreporter) -> None:
    if CASES:
        parts = ", ".join(f"{target} {n:,}" for target, n in sorted(CASES.items()))
        terminalreporter.write_line(f"fuzz cases: {sum(CASES.values()):,} ({parts})")
