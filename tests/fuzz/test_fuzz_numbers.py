"""Numbers as files spell them: the compiled CSV parser, pyarrow's and the whole reading
path give Python's ``float()`` of every cell, bit for bit (NaN for an empty cell)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
from hypothesis import given, settings
from hypothesis import strategies as st

from stablefit.io import open_source
from stablefit.io.csv_numbers import TARGET, parse_plain_numbers

from .conftest import count_case
from .strategies import as_float, number_text, same

cells = st.one_of(number_text, st.just(""))
rows = st.lists(st.tuples(cells, cells), min_size=1, max_size=12)


def chunk(lines: list[tuple[str, str]], newline: str = "\n") -> bytes:
    return ("a,y" + newline + "".join(f"{a},{b}{newline}" for a, b in lines)).encode()


@settings(settings.get_profile("fuzz"), max_examples=4000)
@given(lines=rows, newline=st.sampled_from(["\n", "\r\n"]))
def test_compiled_parser_and_pyarrow_give_float_of_each_cell(lines, newline):
    count_case("csv parser (compiled vs pyarrow vs float)")
    data = chunk(lines, newline)
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


@settings(settings.get_profile("fuzz"), max_examples=1500)
@given(
    lines=st.lists(st.tuples(number_text, number_text, cells), min_size=1, max_size=8),
    ending=st.sampled_from([".csv", ".tsv"]),
    skip=st.booleans(),
)
def test_a_file_reads_as_float_of_each_cell(lines, ending, skip):
    """The whole path users take: the header, column choice, chunks, both parsers."""
    count_case("file reading (open_source)")
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
