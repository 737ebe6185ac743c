"""Every number a CSV file holds reads as Python's ``float()`` of its text, bit for bit.

Millions of cells, the way files hold them (``repr``, ``%.17g``, ``numpy.savetxt``'s
``%.18e``) and the way parsers get them wrong: numbers within a hair of halfway between
two doubles (truncated after 17 to 25 digits, one unit above, and in full), 19 and 20
significant digits, subnormals, the largest and smallest doubles and beyond, long runs of
leading and trailing zeros. They are read through the whole file path (the compiled
parser, and pyarrow for the lines it leaves), and compared with ``float()`` of each cell.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stablefit.io import open_source
from stablefit.io.csv_numbers import parse_plain_numbers

COLUMNS = 5
# Exact decimal digits of (2m + 1) · 2^(e - 1) need powers of five up to 5^1075.
POWERS_OF_FIVE = [5**k for k in range(1100)]


def finite_doubles(rng: np.random.Generator, n: int) -> np.ndarray:
    """Doubles whose bits are uniform below infinity's: every exponent equally likely,
    subnormals included, with either sign."""
    bits = rng.integers(0, 0x7FF0000000000000, size=n, dtype=np.uint64)
    bits |= rng.integers(0, 2, size=n, dtype=np.uint64) << np.uint64(63)
    return bits.view(np.float64)


def exact_digits(mantissa: int, exponent: int) -> tuple[str, int]:
    """(digits, q) with digits · 10^q == mantissa · 2^exponent exactly."""
    if exponent >= 0:
        return str(mantissa << exponent), 0
    return str(mantissa * POWERS_OF_FIVE[-exponent]), exponent


def near_halfway(x: float) -> list[str]:
    """Cells at and around the midpoint between |x| and the next double up: its digits cut
    after 17 to 25 digits, one unit more in the last kept digit, and all of them."""
    bits = int(np.float64(abs(x)).view(np.uint64))
    biased, fraction = bits >> 52, bits & ((1 << 52) - 1)
    mantissa = fraction | (1 << 52) if biased else fraction
    exponent = (biased or 1) - 1075
    digits, q = exact_digits(2 * mantissa + 1, exponent - 1)
    cells = [f"{digits}e{q}"]
    for keep in (17, 18, 19, 20, 25):
        if keep < len(digits):
            cut = int(digits[:keep])
            shift = q + len(digits) - keep
            cells += [f"{cut}e{shift}", f"{cut + 1}e{shift}"]
    return cells


def decimal_cells(rng: np.random.Generator, n: int) -> list[str]:
    """Integers of 1 to 20 digits times 10^q, q in -360..330, with the point anywhere."""
    cells = []
    lengths = rng.integers(1, 21, size=n)
    exponents = rng.integers(-360, 331, size=n).tolist()
    points = rng.random(n).tolist()
    leads = rng.integers(1, 10, size=n).tolist()
    rests = rng.integers(0, 10**19, size=n, dtype=np.uint64).tolist()
    for length, q, point, lead, rest in zip(
        lengths.tolist(), exponents, points, leads, rests, strict=True
    ):
        digits = f"{lead}{rest:019d}"[:length]
        at = int(point * (len(digits) + 1))
        cells.append(f"{digits[:at]}.{digits[at:]}e{q}" if point < 0.7 else f"{digits}e{q}")
    return cells


def special_cells() -> list[str]:
    """The edges: the extreme doubles, halfway to zero and to overflow, 2^53 ± 1, zeros."""
    cells = [
        "0", "-0", "0.0", "-0.0", "0e0", "0e-999", "00000000000000000000000", "-0e400",
        "5e-324", "4.9406564584124654e-324", "4.9406564584124654e-324",
        "2.4703282292062327e-324", "2.4703282292062328e-324", "2.47032822920623272e-324",
        "2.2250738585072011e-308", "2.2250738585072014e-308", "2.2250738585072012e-308",
        "1.7976931348623157e308", "1.7976931348623158e308", "1.7976931348623159e308",
        "1.797693134862315807e308", "1.797693134862315808e308", "1e308", "1e309", "1e-400",
        "9007199254740991", "9007199254740992", "9007199254740993", "9007199254740995",
        "18446744073709551615", "18446744073709551616", "9999999999999999999",
        "99999999999999999999", "10000000000000000000", "1e22", "1e23", "8.589973e9",
        "0.1", "0.30000000000000004", "1.5e+5", "1.5E-5", ".5", "5.", "-.5e-3", "+7.25",
        "1e0400", "1e-0400", "123456789012345678901234567890e-30", "0.000001e6",
        "1." + "0" * 40, "0." + "0" * 40 + "1", "1" + "0" * 30 + "e-30",
        "1.00000000000000011102230246251565404236316680908203125",
        "1.00000000000000011102230246251565404236316680908203124",
        "1.00000000000000011102230246251565404236316680908203126",
    ]  # fmt: skip
    return cells + ["-" + c for c in cells if not c.startswith(("-", "+"))]


def adversarial_cells(seed: int, n: int) -> list[str]:
    """About ``n`` cells of every kind above, shuffled."""
    rng = np.random.default_rng(seed)
    doubles = finite_doubles(rng, n // 2)
    fixed = doubles[np.abs(doubles) < 1e15][: n // 20]
    cells = [repr(x) for x in doubles.tolist()]
    for form in (".17g", ".16e", ".18e", ".19e"):
        cells += [format(x, form) for x in doubles[: n // 10].tolist()]
    cells += [format(x, ".20f") for x in fixed.tolist()]
    cells += decimal_cells(rng, n // 8)
    cells += [c for x in doubles[: n // 100].tolist() for c in near_halfway(x)]
    cells += special_cells()
    return [cells[i] for i in rng.permutation(len(cells))]


def write_cells(path, cells: list[str]) -> np.ndarray:
    """Write the cells row by row into COLUMNS columns; return float() of each, so laid out."""
    cells = cells[: len(cells) - len(cells) % COLUMNS]
    names = ",".join(f"x{j}" for j in range(COLUMNS - 1)) + ",y"
    rows = (",".join(cells[i : i + COLUMNS]) for i in range(0, len(cells), COLUMNS))
    path.write_text(names + "\n" + "\n".join(rows) + "\n")
    return np.array([float(c) for c in cells]).reshape(-1, COLUMNS)


def read_file(path, chunk_bytes: int) -> np.ndarray:
    source = open_source(path, target="y")
    assert source.destinations is not None, "the compiled parser does not read the file"
    source.chunk_bytes = chunk_bytes
    batches = list(source.batches())
    X = np.concatenate([b.X for b in batches])
    y = np.concatenate([b.y for b in batches])
    return np.column_stack([X, y])


def assert_same_doubles(got: np.ndarray, expected: np.ndarray, cells: list[str]) -> None:
    """Bit for bit (so -0.0 is not 0.0); the first cells that differ are named."""
    assert got.shape == expected.shape
    differ = np.flatnonzero(got.view(np.uint64).ravel() != expected.view(np.uint64).ravel())
    shown = [(cells[i], got.ravel()[i], expected.ravel()[i]) for i in differ[:5]]
    assert differ.size == 0, f"{differ.size} cells differ from float(): {shown}"


@pytest.mark.slow
def test_millions_of_cells_read_as_float_reads_them(tmp_path) -> None:
    cells = adversarial_cells(seed=20261130, n=2_000_000)
    assert len(cells) > 2_000_000
    path = tmp_path / "cells.csv"
    expected = write_cells(path, cells)
    # Chunks of 4 MiB, as files are read, each with lines for pyarrow among the others.
    assert_same_doubles(read_file(path, 4 << 20), expected, cells)


def odd_lines(cells: list[str]) -> np.ndarray:
    """The one-cell lines the compiled parser leaves to pyarrow."""
    text = ("\n".join(cells) + "\n").encode()
    parsed = parse_plain_numbers(
        memoryview(text),
        has_header=False,
        destinations=np.zeros(1, dtype=np.int64),
        n_features=1,
        has_target=False,
        delimiter=",",
    )
    assert parsed is not None
    return parsed.odd_rows


def test_full_precision_numbers_take_the_compiled_path() -> None:
    doubles = finite_doubles(np.random.default_rng(7), 100_000).tolist()
    assert odd_lines([repr(x) for x in doubles]).size == 0
    for form in (".17g", ".18e", ".16e"):
        assert odd_lines([format(x, form) for x in doubles]).size == 0, form
    # 20 significant digits: only those within a hair of halfway are left to pyarrow.
    assert odd_lines([format(x, ".19e") for x in doubles]).size < 100


def test_only_near_halfway_numbers_beyond_19_digits_are_left_to_pyarrow() -> None:
    doubles = finite_doubles(np.random.default_rng(8), 200).tolist()
    cells = [cell for x in doubles for cell in near_halfway(x)]
    # The exact midpoints, and those cut after 20 or 25 digits, or one unit above: the
    # rounding of their first 19 digits is open when a digit after them is not zero.
    digits = [cell.split("e")[0] for cell in cells]
    exact = np.array([digits[19:].strip("0") != "" for digits in digits])
    np.testing.assert_array_equal(odd_lines(cells), np.flatnonzero(exact))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.floats(allow_nan=False, allow_infinity=False).map(repr),
            st.floats(allow_nan=False).map(lambda x: format(x, ".19e")),
            st.from_regex(
                r"[+-]?([0-9]{1,25}|[0-9]{0,12}\.[0-9]{1,25})([eE][+-]?[0-9]{1,3})?", fullmatch=True
            ),
        ),
        min_size=COLUMNS,
        max_size=400,
    )
)
def test_sampled_cells_read_as_float_reads_them(tmp_path_factory, cells: list[str]) -> None:
    path = tmp_path_factory.mktemp("sampled") / "cells.csv"
    expected = write_cells(path, cells)
    assert_same_doubles(read_file(path, 1 << 20), expected, cells)
