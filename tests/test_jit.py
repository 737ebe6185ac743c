"""Kernels give the same answers run as Python (small work, numba not loaded) as compiled,
and a command on a small file does not load numba at all."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from stablefit import jit
from stablefit.diagnose.training import forecast_training
from stablefit.io.csv_numbers import parse_plain_numbers
from stablefit.solve.kernels import residual_gradient
from stablefit.summary import Summary


def both_ways(function, *args):
    with jit.forced(as_python=True):
        as_python = function(*args)
    with jit.forced(as_python=False):
        compiled = function(*args)
    return as_python, compiled


def bits(values) -> bytes:
    return np.ascontiguousarray(values, dtype=np.float64).tobytes()


def test_the_csv_parser_reads_the_same_bits() -> None:
    rng = np.random.default_rng(1)
    doubles = rng.integers(0, 0x7FF0000000000000, size=60, dtype=np.uint64).view(np.float64)
    cells = [repr(x) for x in doubles.tolist()] + ["1e23", "-0", "", "NA", "123456789012345678901"]
    text = ("\n".join(f"{c},{i}" for i, c in enumerate(cells)) + "\n").encode()

    def parse(text: bytes):
        return parse_plain_numbers(
            memoryview(text),
            has_header=False,
            destinations=np.array([0, -2]),
            n_features=1,
            has_target=True,
            delimiter=",",
        )

    as_python, compiled = both_ways(parse, text)
    assert bits(as_python.batch.X[:-2]) == bits(compiled.batch.X[:-2])
    np.testing.assert_array_equal(as_python.odd_rows, compiled.odd_rows)
    assert as_python.odd_lines == compiled.odd_lines == b"NA,63\n"


def test_the_summary_is_the_same() -> None:
    rng = np.random.default_rng(2)
    X = rng.normal(size=(300, 4)) * [1, 1e3, 1e-3, 7]
    X[5, 1], X[17, 2], X[40, 0] = np.nan, np.inf, -np.inf
    y = X[:, 0] - 2 * X[:, 3] + rng.normal(size=300)
    as_python, compiled = both_ways(lambda: Summary.from_arrays(X, y))
    for name in ("count", "min", "max", "n_nan", "n_inf", "is_integer"):
        np.testing.assert_array_equal(
            getattr(as_python.columns, name), getattr(compiled.columns, name), err_msg=name
        )
    for (values_a, rows_a), (values_b, rows_b) in zip(
        as_python.columns.extremes, compiled.columns.extremes, strict=True
    ):
        np.testing.assert_array_equal(values_a, values_b)
        np.testing.assert_array_equal(rows_a, rows_b)
    assert as_python.n_complete == compiled.n_complete
    # The compiled cross-product adds in another order: the same to rounding.
    np.testing.assert_allclose(as_python.comoment, compiled.comoment, rtol=1e-13)
    np.testing.assert_array_equal(as_python.median(), compiled.median())


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "rmsprop", "adagrad"])
def test_the_training_forecast_is_the_same_bit_for_bit(optimizer: str) -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, 3)) * [1, 50, 1e3]
    y = X @ [1.0, -2.0, 0.5] + rng.normal(size=40)
    summary = Summary.from_arrays(X, y)
    as_python, compiled = both_ways(
        lambda: forecast_training(summary, optimizer=optimizer, epochs=20, batch_size=8)
    )
    assert as_python == compiled


def test_the_refinement_pass_is_the_same_bit_for_bit() -> None:
    rng = np.random.default_rng(4)
    Z = rng.normal(size=(50, 6))
    Z_lo = Z * 2.0**-60
    y = rng.normal(size=50)
    b_hi, b_lo = rng.normal(size=6), rng.normal(size=6) * 2.0**-55
    w = rng.uniform(0.5, 2.0, size=50)
    as_python, compiled = both_ways(residual_gradient, Z, Z_lo, y, b_hi, b_lo, 0.25, 1e-18, w)
    for a, b in zip(as_python[:4], compiled[:4], strict=True):
        assert bits(a) == bits(b)
    assert as_python[4] == compiled[4]


@pytest.mark.parametrize("command", ["fit", "doctor"])
def test_a_command_on_a_small_file_does_not_load_numba(tmp_path, command: str) -> None:
    path = tmp_path / "small.csv"
    path.write_text("a,b,y\n1,2,3.5\n2,3,5.25\n3,5,8\n4,4,9.125\n")
    program = (
        "import sys\n"
        "from stablefit.cli.main import main\n"
        f"code = main([{command!r}, {str(path)!r}, '--target', 'y'])\n"
        "print(code, 'numba' in sys.modules, 'scipy.linalg' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    code, numba_loaded, _ = done.stdout.split()[-3:]
    assert code in ("0", "1") and numba_loaded == "False"
