"""Real data files and a runner for the command-line tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from stablefit.cli.main import main

# The houses' price = 50 + 10 rooms + 3 area, plus noise of SD 5.
TRUE_INTERCEPT = 50.0
TRUE_COEF = {"rooms": 10.0, "area_m2": 3.0}
N_HOUSES = 300


@dataclass(frozen=True)
class Run:
    """What one ``stablefit`` command did."""

    code: int
    out: str
    err: str


@pytest.fixture
def run_cli(capsys) -> Callable[..., Run]:
    """Run ``stablefit ARGS...`` in this process: exit code, stdout and stderr."""

    def run(*args: object) -> Run:
        capsys.readouterr()
        try:
            code = main([str(arg) for arg in args])
        except SystemExit as stop:  # argparse: usage errors and --help
            code = int(stop.code or 0)
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


def write_houses(path: Path, *, seed: int = 3, rows: int = N_HOUSES) -> Path:
    """A CSV of houses: two numeric features, a text column, and the price."""
    rng = np.random.default_rng(seed)
    rooms = rng.integers(1, 6, rows)
    area = rng.uniform(20, 200, rows).round(2)
    city = rng.choice(["Oslo", "Rome", "Lima"], rows)
    price = TRUE_INTERCEPT + TRUE_COEF["rooms"] * rooms + TRUE_COEF["area_m2"] * area
    price = price + rng.normal(0, 5, rows)
    lines = ["rooms,city,area_m2,price"] + [
        f"{r},{c},{float(a)!r},{float(p)!r}"
        for r, c, a, p in zip(rooms, city, area, price, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def houses_writer() -> Callable[..., Path]:
    """:func:`write_houses`, for tests that need a variant of the houses file."""
    return write_houses


@pytest.fixture
def true_coef() -> dict[str, float]:
    return dict(TRUE_COEF)


@pytest.fixture
def houses_csv(tmp_path) -> Path:
    """Houses with a text column ('city'): fitting them needs --drop-non-numeric."""
    return write_houses(tmp_path / "houses.csv")


@pytest.fixture
def numeric_houses_csv(tmp_path) -> Path:
    """The houses without the text column."""
    path = write_houses(tmp_path / "all_houses.csv")
    lines = [line.split(",") for line in path.read_text().splitlines()]
    target = tmp_path / "numeric_houses.csv"
    target.write_text("\n".join(",".join([r, a, p]) for r, _, a, p in lines) + "\n")
    return target
