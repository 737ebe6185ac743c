"""Structure-aware generators of what users feed stablefit: numbers as files spell them,
CSV dialects, encodings, compression, Parquet files, and hostile output paths."""

from __future__ import annotations

import gzip
import io
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import strategies as st

# -- numbers as text ----------------------------------------------------------------------

SPECIALS = ["inf", "-inf", "+inf", "Inf", "INF", "Infinity", "-Infinity", "nan", "NaN"]
EDGES = [
    "4.9e-324", "2.4703282292062327e-324", "2.4703282292062328e-324", "2.2250738585072011e-308",
    "2.2250738585072014e-308", "1.7976931348623157e308", "1.7976931348623158e308",
    "1.7976931348623159e308", "1e308", "1e309", "1e-320", "-0", "-0.0", "0e999999",
    "9007199254740993", "9007199254740992.5", "18446744073709551615", "18446744073709551616",
    "0.1", "0.30000000000000004", "123456789012345678901234567890", "1e23", "8.589973e9",
    "7.0e-10", "5e-324", "1e-400", "00000000000000000000001.5",
]  # fmt: skip


@st.composite
def decimal_text(draw) -> str:
    """A number in the decimal grammar float() and CSV readers share (no underscores)."""
    sign = draw(st.sampled_from(["", "", "-", "+"]))
    whole = draw(st.text("0123456789", max_size=25))
    fraction = draw(st.none() | st.text("0123456789", max_size=25))
    if not whole and not fraction:
        whole = "0"
    body = whole + ("" if fraction is None else "." + fraction)
    if draw(st.booleans()):
        exponent = draw(st.integers(-400, 400))
        body += draw(st.sampled_from("eE")) + draw(st.sampled_from(["", "+"])) * (exponent >= 0)
        body += str(exponent)
    return sign + body


def _float_text(value: float, style: str) -> str:
    if style == "repr":
        return repr(value)
    if not math.isfinite(value):
        return repr(value)
    return format(value, style)


number_text = st.one_of(
    decimal_text(),
    st.builds(
        _float_text,
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from(["repr", ".17g", ".6e", ".3f", "g"]),
    ),
    st.integers(-(10**30), 10**30).map(str),
    st.sampled_from(SPECIALS + EDGES),
)


def moderate(cell: str) -> bool:
    """Zero, inf, NaN, or a magnitude between 1e-100 and 1e100.

    Columns scaled near the ends of float64 have their own tests (tests/solve/
    test_certificate.py): subnormal columns are refused, and a slope near 1e280 has a
    variance that overflows the covariance (an expected failure in
    tests/fuzz/test_fuzz_cli.py). The command fuzzing keeps to the numbers the rest of
    the pipeline must get right.
    """
    value = float(cell)
    return not math.isfinite(value) or value == 0 or 1e-100 < abs(value) < 1e100


moderate_number_text = number_text.filter(moderate)


def as_float(cell: str) -> float:
    """What the cell means: Python's float() of it, an empty cell NaN."""
    return math.nan if cell == "" else float(cell)


def same(a: float, b: float) -> bool:
    """Equal bit for bit (the sign of zero counts), or both NaN."""
    return (math.isnan(a) and math.isnan(b)) or np.float64(a).tobytes() == np.float64(b).tobytes()


# -- tables and files ----------------------------------------------------------------------

NAMES = st.sampled_from(
    ["x", "y", "a b", "speed [m/s]", "dose [/kg]", ":smile:", "e\x1b[31mvil", "tab\there",
     "crème", "列", "x,y", 'q"uote', "", "x", "  pad  ", "NA", "1e3", "new\nline"]
)  # fmt: skip


@st.composite
def table(draw) -> tuple[list[str], list[list[str]]]:
    """A header and rows of cells: mostly numbers, sometimes text, blanks and odd rows."""
    width = draw(st.integers(1, 5))
    names = [draw(NAMES) for _ in range(width)]
    if draw(st.integers(0, 3)):  # mostly a target called y, as the commands are told
        names[-1] = "y"
    cell = st.one_of(
        moderate_number_text,
        moderate_number_text,
        moderate_number_text,
        st.sampled_from(["", "NA", "null", "true", "false", "abc", "1,5", '"2"', " 3 "]),
    )
    n_rows = draw(st.integers(0, 12))
    rows = []
    for _ in range(n_rows):
        row_width = width if draw(st.integers(0, 15)) else draw(st.integers(0, width + 2))
        rows.append([draw(cell) for _ in range(row_width)])
    return names, rows


def quoted(cell: str, delimiter: str, always: bool) -> str:
    if always or any(c in cell for c in (delimiter, '"', "\n", "\r")):
        return '"' + cell.replace('"', '""') + '"'
    return cell


@st.composite
def csv_file(draw) -> tuple[str, bytes]:
    """A file name and its bytes: a dialect, an encoding, maybe compression or damage."""
    names, rows = draw(table())
    delimiter, ending = draw(st.sampled_from([(",", ".csv"), ("\t", ".tsv")]))
    newline = draw(st.sampled_from(["\n", "\n", "\r\n"]))
    always = draw(st.booleans())
    lines = [delimiter.join(quoted(c, delimiter, always) for c in names)]
    lines += [delimiter.join(quoted(c, delimiter, always) for c in row) for row in rows]
    text = newline.join(lines) + (newline if draw(st.integers(0, 4)) else "")
    if draw(st.integers(0, 6)) == 0:
        text = "\n" * draw(st.integers(1, 3)) + text
    encoding = draw(st.sampled_from(["utf-8"] * 6 + ["utf-8-sig", "latin-1", "utf-16"]))
    data = text.encode(encoding, errors="replace")
    damage = draw(st.sampled_from(["none"] * 8 + ["bytes", "truncate", "nul"]))
    if damage == "bytes" and data:
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at + 1 :]
    elif damage == "truncate":
        data = data[: draw(st.integers(0, len(data)))]
    elif damage == "nul":
        data = data.replace(b"\n", b"\x00\n", 1)
    compression = draw(st.sampled_from(["none"] * 6 + ["gzip", "gzip-cut", "gzip-fake"]))
    if compression == "gzip":
        data = gzip.compress(data)
    elif compression == "gzip-cut":
        packed = gzip.compress(data)
        data = packed[: draw(st.integers(0, max(len(packed) - 1, 0)))]
    if compression != "none":
        ending += ".gz"
    return "data" + ending, data


@st.composite
def parquet_file(draw) -> tuple[str, bytes]:
    """A Parquet file of odd column types, or its bytes damaged."""
    n = draw(st.integers(0, 20))
    columns: dict[str, pa.Array] = {}
    kinds = draw(st.lists(st.sampled_from(
        ["float", "int", "uint64", "bool", "category", "text", "decimal", "timestamp",
         "null", "list", "float-nan"]), min_size=1, max_size=4))  # fmt: skip
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    for i, kind in enumerate(kinds):
        columns[f"c{i}_{kind}"] = _parquet_column(kind, n, rng)
    columns["y"] = pa.array(rng.normal(size=n))
    buffer = io.BytesIO()
    pq.write_table(pa.table(columns), buffer, compression=draw(st.sampled_from(["snappy", "none"])))
    data = buffer.getvalue()
    damage = draw(st.sampled_from(["none"] * 5 + ["flip", "truncate"]))
    if damage == "flip":
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
    elif damage == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    return "data.parquet", data


def _parquet_column(kind: str, n: int, rng: np.random.Generator) -> pa.Array:
    values = rng.normal(size=n) * 10.0 ** rng.integers(-90, 90)  # see moderate()
    if kind == "float":
        return pa.array(values)
    if kind == "float-nan":
        return pa.array(np.where(rng.random(n) < 0.3, np.nan, values))
    if kind == "int":
        return pa.array(rng.integers(-(2**63), 2**63 - 1, n, dtype=np.int64))
    if kind == "uint64":
        return pa.array(rng.integers(2**62, 2**64 - 1, n, dtype=np.uint64))
    if kind == "bool":
        return pa.array(rng.random(n) < 0.5)
    if kind == "category":
        return pa.array(rng.choice(["u", "v", "w"], n)).dictionary_encode()
    if kind == "text":
        return pa.array(rng.choice(["1.5", "x", "2"], n))
    if kind == "decimal":
        return pa.array([f"{v:.3f}" for v in rng.normal(size=n)]).cast(pa.decimal128(20, 3))
    if kind == "timestamp":
        return pa.array(rng.integers(0, 10**12, n), type=pa.timestamp("ms"))
    if kind == "list":
        return pa.array([[float(v)] for v in values], type=pa.list_(pa.float64()))
    return pa.nulls(n, type=pa.float64())
