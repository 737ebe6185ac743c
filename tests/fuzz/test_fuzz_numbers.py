"""Numbers as files spell them: the compiled CSV parser, pyarrow's and the whole reading
path give Python's ``float()`` of every cell, bit for bit (NaN for an empty cell).

Each test runs its generator twice: under hypothesis (a failure shrinks to a minimal
chunk) and from seeds (many more cases for the time).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
from hypothesis import given, settings

from stablefit.io import open_source
from stablefit.io.csv_numbers import TARGET, parse_plain_numbers

from .choices import Choices
from .conftest import count_case, run_seeded
from .strategies import as_float, number_text, same, strategy

PARSER = "csv parser (compiled vs pyarrow vs float)"
READING = "file reading (open_source)"


def cell(c: Choices) -> str:
    return number_text(c) if c.integer(0, 7) else ""


def chunk(c: Choices) -> tuple[list[tuple[str, str]], str]:
    """Rows of two cells (a feature and the target), and the line ending."""
    lines = [(cell(c), cell(c)) for _ in range(c.integer(1, 12))]
    return lines, c.choice(["\n", "\r\n"])


def check_parsers(lines: list[tuple[str, str]], newline: str) -> None:
    count_case(PARSER)
    data = ("a,y" + newline + "".join(f"{a},{b}{newline}" for a, b in lines)).encode()
    expected = np.array([[as_float(a), as_float(b)] for a, b in lines])
    table = pa_csv.read_csv(
        pa.py_buffer(data),
        convert_options=pa_csv.ConvertOptions(column_types={"a": pa.float64(), "y": pa.float64()}),
    )
    arrow = np.column_stack([table.column(n).to_numpy(zero_copy_only=False) for n in "ay"])
    assert all(map(same, arrow.ravel(), expected.ravel())), (data, arrow, expected)
    parsed = parse_plain_numbers(
        memoryview(data),
        has_header=True,
        destinations=np.array([0, TARGET]),
        n_features=1,
        has_target=True,
        delimiter=",",
    )
    if parsed is None:  # the whole chunk left to pyarrow: compared above
        return
    odd = set(parsed.odd_rows.tolist())
    for row, (a, b) in enumerate(lines):
        if row in odd:
            continue
        got = (parsed.batch.X[row, 0], parsed.batch.y[row])
        assert same(got[0], as_float(a)) and same(got[1], as_float(b)), (a, b, got)


@settings(settings.get_profile("fuzz"), max_examples=250)
@given(case=strategy(chunk))
def test_compiled_parser_and_pyarrow_give_float_of_each_cell(case):
    check_parsers(*case)


def test_compiled_parser_and_pyarrow_give_float_of_each_cell_seeded():
    run_seeded(lambda c: check_parsers(*chunk(c)), first_seed=0, count=3000)


def numbers_file(c: Choices) -> tuple[list[tuple[str, str, str]], str, bool]:
    """Rows of three cells (the middle one maybe a column left out), the file's ending
    (.csv or .tsv), and whether the middle column is left out."""
    lines = [(number_text(c), number_text(c), cell(c)) for _ in range(c.integer(1, 8))]
    return lines, c.choice([".csv", ".tsv"]), bool(c.integer(0, 1))


def check_reading(lines: list[tuple[str, str, str]], ending: str, skip: bool) -> None:
    """The whole path users take: the header, column choice, chunks, both parsers."""
    count_case(READING)
    delimiter = "," if ending == ".csv" else "\t"
    columns = ["a", "skipped", "y"] if skip else ["a", "b", "y"]
    text = delimiter.join(columns) + "\n"
    text += "".join(delimiter.join(line) + "\n" for line in lines)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"numbers{ending}"
        path.write_text(text)
        source = open_source(path, target="y", columns=["a", "y"] if skip else None)
        batches = list(source.batches())
    X = np.concatenate([b.X for b in batches])
    y = np.concatenate([b.y for b in batches])
    for row, (a, b, target) in enumerate(lines):
        assert same(X[row, 0], as_float(a)), (a, X[row, 0])
        if not skip:
            assert same(X[row, 1], as_float(b)), (b, X[row, 1])
        assert same(y[row], as_float(target)), (target, y[row])


@settings(settings.get_profile("fuzz"), max_examples=60)
@given(case=strategy(numbers_file))
def test_a_file_reads_as_float_of_each_cell(case):
    check_reading(*case)


def test_a_file_reads_as_float_of_each_cell_seeded():
    run_seeded(lambda c: check_reading(*numbers_file(c)), first_seed=0, count=600)
