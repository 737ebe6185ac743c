"""The compiled plain-number CSV parser gives pyarrow's values exactly, or leaves the line
(or the chunk) to pyarrow."""

from __future__ import annotations

import gzip
import io
import math

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stablefit.io import open_source
from stablefit.io.csv import separates_plain_numbers
from stablefit.io.csv_numbers import SKIP, TARGET, PlainNumbers, parse_plain_numbers


def pyarrow_values(text: bytes, n_columns: int) -> np.ndarray | None:
    """The float64 matrix pyarrow reads from headerless ``text``, or None if it refuses."""
    names = [f"c{j}" for j in range(n_columns)]
    try:
        table = pa_csv.read_csv(
            io.BytesIO(text),
            read_options=pa_csv.ReadOptions(column_names=names),
            parse_options=pa_csv.ParseOptions(ignore_empty_lines=False),
            convert_options=pa_csv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.float64()), strings_can_be_null=True
            ),
        )
    except pa.ArrowInvalid:
        return None
    return np.column_stack([c.to_numpy(zero_copy_only=False) for c in table.columns])


def parsed(text: bytes, n_columns: int) -> PlainNumbers | None:
    return parse_plain_numbers(
        memoryview(text),
        has_header=False,
        destinations=np.arange(n_columns),
        n_features=n_columns,
        has_target=False,
        delimiter=",",
    )


def compiled_values(text: bytes, n_columns: int) -> np.ndarray | None:
    """The values read as the file reader does: compiled, and the odd lines by pyarrow;
    None if the chunk is declined or pyarrow refuses its odd lines."""
    result = parsed(text, n_columns)
    if result is None:
        return None
    X = result.batch.X
    if result.odd_rows.size:
        odd = pyarrow_values(result.odd_lines, n_columns)
        if odd is None or len(odd) != result.odd_rows.size:
            return None
        X[result.odd_rows] = odd
    return X


def same_doubles(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-for-bit equal, so that -0.0 differs from 0.0 and NaN equals NaN."""
    return a.shape == b.shape and a.tobytes() == b.tobytes()


decimal_numbers = st.builds(
    lambda sign, whole, fraction, exponent: f"{sign}{whole}{fraction}{exponent}",
    st.sampled_from(["", "-", "+"]),
    st.from_regex(r"[0-9]{0,20}", fullmatch=True),
    st.sampled_from(["", "."]).flatmap(
        lambda point: (
            st.from_regex(r"[0-9]{0,20}", fullmatch=True).map(lambda d: point + d)
            if point
            else st.just("")
        )
    ),
    st.sampled_from(["", "e", "E"]).flatmap(
        lambda e: (
            st.from_regex(r"[+-]?[0-9]{0,3}", fullmatch=True).map(lambda d: e + d)
            if e
            else st.just("")
        )
    ),
)
float_reprs = (
    st.floats(allow_nan=False, allow_infinity=False)
    .map(lambda v: st.sampled_from([repr(v), f"{v:.17g}", f"{v:.6e}", f"{v:.3f}"]))
    .flatmap(lambda s: s)
)
odd_cells = st.sampled_from(
    ["", "NA", "nan", "inf", "-inf", "null", " 1", "1 ", "0x1A", '"3"', "1,5", "--1", ".", "e3"]
)
near_two_to_53 = st.integers(2**53 - 4, 2**53 + 4).map(str)
cells = st.one_of(decimal_numbers, float_reprs, near_two_to_53, odd_cells)


@settings(max_examples=600, deadline=None)
@given(
    st.integers(1, 4).flatmap(lambda k: st.lists(st.lists(cells, min_size=k, max_size=k))),
    st.booleans(),
)
def test_values_are_pyarrows_or_pyarrow_reads_them(rows: list[list[str]], padded) -> None:
    if not rows:
        return
    # A long last line leaves eight bytes after every cell before it, where the parser
    # reads integer parts a word at a time; the chunk's last bytes it reads one by one.
    if padded:
        rows = [*rows, ["-1234567890.125"] * len(rows[0])]
    text = "".join(",".join(row) + "\n" for row in rows).encode()
    n_columns = len(rows[0])
    compiled = compiled_values(text, n_columns)
    if compiled is None:
        return
    expected = pyarrow_values(text, n_columns)
    assert expected is not None, f"pyarrow refuses {text!r}, the compiled parser did not"
    assert same_doubles(compiled, expected), text


@pytest.mark.parametrize(
    ("cell", "value"),
    [
        ("0.1", 0.1),
        ("-0", -0.0),
        ("-0.000", -0.0),
        ("1e22", 1e22),
        ("9007199254740992", 2.0**53),
        ("-12.8534662944", -12.8534662944),
        ("5e-22", 5e-22),
        ("1.5E+3", 1500.0),
        ("", math.nan),
    ],
)
def test_cells_it_reads(cell: str, value: float) -> None:
    got = compiled_values(f"{cell}\n".encode(), 1)
    assert got is not None
    assert same_doubles(got, np.array([[value]]))


def padded_for_words(line: str) -> bytes:
    """The line, then one of as many long cells: no cell of it is near the chunk's end."""
    n_columns = line.count(",") + 1
    return (line + "\n" + ",".join(["1" * 16] * n_columns) + "\n").encode()


def test_integer_parts_of_every_length_read_a_word_at_a_time() -> None:
    line = ",".join(
        [str(10**k + k) for k in range(15)]
        + ["-0.5", "+7.25", "08.5", ".5", "5.", "-.5", "1e5", "12345678e-3", "", "0"]
    )
    text = padded_for_words(line)
    n_columns = line.count(",") + 1
    compiled = compiled_values(text, n_columns)
    assert compiled is not None
    assert same_doubles(compiled, pyarrow_values(text, n_columns))


@pytest.mark.parametrize("cell", ["12\u00e9", "1\u00ff", "\u00b91", "7\x00", "3:", "4/"])
def test_a_digit_run_ends_at_any_other_byte(cell: str) -> None:
    assert compiled_values(padded_for_words(f"1,{cell},2"), 3) is None


@pytest.mark.parametrize(
    "cell",
    [
        "9007199254740993",  # 2^53 + 1: not a double, beyond Clinger's fast path
        "1e23",  # 10^23 is not a double
        "0.30000000000000004",  # 17 digits, mantissa beyond 2^53
        "-1.7976931348623157e308",
        "4.9406564584124654e-324",
        "123456789012345678901",  # more than 19 digits, but not near halfway
    ],
)
def test_full_precision_cells_it_reads(cell: str) -> None:
    result = parsed(f"{cell}\n".encode(), 1)
    assert result is not None and result.odd_rows.size == 0
    assert same_doubles(result.batch.X, np.array([[float(cell)]]))


@pytest.mark.parametrize(
    "cell",
    [
        "NA",
        "inf",
        " 1",
        "1e",
        '"3"',
        "1.00000000000000011102230246251565404236316680908203125",  # halfway, 55 digits
    ],
)
def test_lines_it_leaves_to_pyarrow(cell: str) -> None:
    result = parsed(f"1,2\n3,{cell}\n4,5\n".encode(), 2)
    assert result is not None
    np.testing.assert_array_equal(result.odd_rows, [1])
    assert result.odd_lines == f"3,{cell}\n".encode()
    np.testing.assert_array_equal(result.batch.X[[0, 2]], [[1.0, 2.0], [4.0, 5.0]])


@pytest.mark.parametrize(
    ("text", "odd_rows"),
    [
        (b"1,2\n3\n5,6\n", [1]),
        (b"1,2\n3,4,5\n5,6\n", [1]),
        (b"1,2\n\n3,4\n", [1]),
        (b"1,2\r3,4\n5,6\n", [0]),
    ],
    ids=["short line", "long line", "blank line", "bare CR"],
)
def test_irregular_lines_go_to_pyarrow(text: bytes, odd_rows: list[int]) -> None:
    result = parsed(text, 2)
    assert result is not None
    np.testing.assert_array_equal(result.odd_rows, odd_rows)


def test_chunks_without_a_final_line_break_or_mostly_odd_are_declined() -> None:
    assert parsed(b"1,2\n3,4", 2) is None
    assert parsed(b"1,2\n" + b"NA,1\n" * 5, 2) is None


@pytest.mark.parametrize("long_lines", [0, 1, 4000, 20_000])
def test_chunks_whose_lines_shorten_after_their_start_read_whole(long_lines: int) -> None:
    # The arrays are sized from the lines of the chunk's first 64 KiB; shorter lines after
    # them must still all be read, with the target where it belongs.
    rng = np.random.default_rng(long_lines)
    long = np.round(rng.normal(size=(long_lines, 3)) * 1e6, 9)
    short = rng.integers(0, 10, size=(50_000, 3)).astype(float)
    values = np.concatenate([long, short])
    text = "".join(f"{a!r},{b!r},{c!r}\n" for a, b, c in values.tolist()).encode()
    result = parse_plain_numbers(
        memoryview(b"a,y,b\n" + text),
        has_header=True,
        destinations=np.array([0, TARGET, 1]),
        n_features=2,
        has_target=True,
        delimiter=",",
    )
    assert result is not None and result.odd_rows.size == 0
    assert same_doubles(result.batch.X, np.ascontiguousarray(values[:, [0, 2]]))
    assert same_doubles(result.batch.y, np.ascontiguousarray(values[:, 1]))


def test_destinations_route_fields_and_leave_quoted_text_to_pyarrow() -> None:
    destinations = np.array([1, SKIP, TARGET, 0])
    result = parse_plain_numbers(
        memoryview(b"a,b,c,d\n1,text,2,3\r\n4,more,5,6\r\n"),
        has_header=True,
        destinations=destinations,
        n_features=2,
        has_target=True,
        delimiter=",",
    )
    assert result is not None
    np.testing.assert_array_equal(result.batch.X, [[3.0, 1.0], [6.0, 4.0]])
    np.testing.assert_array_equal(result.batch.y, [2.0, 5.0])
    quoted = memoryview(b'1,"te,xt",2,3\n7,text,8,9\n')
    shape = {"n_features": 2, "has_target": True, "delimiter": ","}
    result = parse_plain_numbers(quoted, has_header=False, destinations=destinations, **shape)
    assert result is not None
    np.testing.assert_array_equal(result.odd_rows, [0])


def test_files_with_declined_chunks_read_the_same(tmp_path) -> None:
    """A file mixing plain chunks and chunks pyarrow must read gives pyarrow's values."""
    rng = np.random.default_rng(3)
    values = np.round(rng.normal(size=(30_000, 3)) * 1e3, 7)
    lines = [",".join(repr(float(v)) for v in row) for row in values]
    lines[20_000] = 'NA,"7",1e400'  # a null marker, a quoted number, an overflow to inf
    path = tmp_path / "mixed.csv"
    path.write_text("a,b,y\r\n" + "\r\n".join(lines))  # CRLF, no final line break
    source = open_source(path, target="y")
    source.chunk_bytes = 1 << 17  # many chunks, only one of them irregular
    batches = list(source.batches())
    X = np.concatenate([b.X for b in batches])
    y = np.concatenate([b.y for b in batches])
    expected = values.copy()
    expected[20_000] = [np.nan, 7.0, np.inf]
    assert same_doubles(X, expected[:, :2])
    assert same_doubles(y, expected[:, 2])
    assert [b.first_row for b in batches] == list(np.cumsum([0] + [b.n_rows for b in batches])[:-1])


@pytest.mark.parametrize("suffix", [".tsv", ".csv.gz"])
def test_tab_separated_and_compressed_files_read_the_same(tmp_path, suffix) -> None:
    rng = np.random.default_rng(5)
    values = np.round(rng.normal(size=(5_000, 2)) * 1e2, 9)
    delimiter = "\t" if suffix == ".tsv" else ","
    text = f"a{delimiter}y\n" + "".join(f"{float(a)!r}{delimiter}{float(b)!r}\n" for a, b in values)
    path = tmp_path / f"data{suffix}"
    if suffix.endswith(".gz"):
        with gzip.open(path, "wt") as stream:
            stream.write(text)
    else:
        path.write_text(text)
    source = open_source(path, target="y")
    assert source.destinations is not None
    batches = list(source.batches())
    assert same_doubles(np.concatenate([b.X for b in batches]), values[:, :1])
    assert same_doubles(np.concatenate([b.y for b in batches]), values[:, 1])


@pytest.mark.parametrize("delimiter", [".", "e", "-", "5", "\t", ",", ";"])
def test_only_delimiters_that_cannot_be_in_a_number_use_the_compiled_parser(delimiter) -> None:
    assert separates_plain_numbers(delimiter) == (delimiter in "\t,;")
