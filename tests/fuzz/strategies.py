"""Structure-aware generators of what users feed stablefit: numbers as files spell them,
CSV dialects, encodings, compression and damage, Parquet files of odd types.

Each generator takes its choices from a :class:`~tests.fuzz.choices.Choices`: hypothesis's
(``strategy(csv_file)``, which shrinks) or a seeded NumPy generator's (the bulk of cases).
"""

from __future__ import annotations

import gzip
import io
import math
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import strategies as st

from .choices import Choices, HypothesisChoices

T = TypeVar("T")

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


def decimal_text(c: Choices) -> str:
    """A number in the decimal grammar float() and CSV readers share (no underscores)."""
    sign = c.choice(["", "", "-", "+"])
    whole = c.text("0123456789", 25)
    fraction = c.text("0123456789", 25) if c.integer(0, 1) else None
    if not whole and not fraction:
        whole = "0"
    body = whole + ("" if fraction is None else "." + fraction)
    if c.integer(0, 1):
        exponent = c.integer(-400, 400)
        body += c.choice("eE") + c.choice(["", "+"]) * (exponent >= 0) + str(exponent)
    return sign + body


def float_text(c: Choices) -> str:
    """A float64 as programs write them: repr, %.17g, %.6e, %.3f, %g."""
    value = c.double()
    style = c.choice(["repr", ".17g", ".6e", ".3f", "g"])
    if style == "repr" or not math.isfinite(value):
        return repr(value)
    return format(value, style)


def number_text(c: Choices) -> str:
    """A number as a file may spell it: any of the generators above, edges and specials."""
    kind = c.integer(0, 3)
    if kind == 0:
        return decimal_text(c)
    if kind == 1:
        return float_text(c)
    if kind == 2:
        return str(c.integer(-(10**30), 10**30))
    return c.choice(SPECIALS + EDGES)


def moderate(cell: str) -> bool:
    """Zero, inf, NaN, or a magnitude between 1e-100 and 1e100.

    Cells spelled each their own way keep to these magnitudes, so that a column of them
    mixes spellings rather than scales; columns near the ends of float64 (offsets up to
    1e300, subnormals, huge values) are made whole by :func:`column_values`.
    """
    value = float(cell)
    return not math.isfinite(value) or value == 0 or 1e-100 < abs(value) < 1e100


def moderate_number_text(c: Choices) -> str:
    """A number spelled as :func:`number_text` spells it, of a :func:`moderate` value."""
    while not moderate(cell := number_text(c)):
        pass
    return cell


def as_float(cell: str) -> float:
    """What the cell means: Python's float() of it, an empty cell NaN."""
    return math.nan if cell == "" else float(cell)


def same(a: float, b: float) -> bool:
    """Equal bit for bit (the sign of zero counts), or both NaN."""
    return (math.isnan(a) and math.isnan(b)) or np.float64(a).tobytes() == np.float64(b).tobytes()


# -- tables and files ----------------------------------------------------------------------

HOSTILE_NAMES = ["y", "a b", "speed [m/s]", "dose [/kg]", ":smile:", "e\x1b[31mvil",
                 "tab\there", "crème", "列", "x,y", 'q"uote', "", "x", "  pad  ", "NA", "1e3",
                 "new\nline"]  # fmt: skip
# What a column without a name of its own is called: blank, or by pandas (a row index
# written by to_csv and read back, or by to_parquet). Chosen in place of HOSTILE_NAMES' "", so that
# the seeded cases that never drew "" keep their files (test_fuzz_regressions pins some).
NO_NAMES = ["", " ", "Unnamed: 0", "Unnamed: 2.1", "__index_level_0__"]
ODD_CELLS = ["", "NA", "null", "true", "false", "abc", "1,5", '"2"', " 3 ", "1e999", "-nan"]

# How the values of one column are made: each kind is a way real columns go wrong.
COLUMN_KINDS = ["spelled", "spelled", "normal", "normal", "offset", "integer", "tiny", "huge",
                "constant", "binary", "sparse", "duplicate"]  # fmt: skip


def column_names(c: Choices, width: int) -> list[str]:
    """Mostly plain names with the first feature ``x`` and the target ``y`` last (as the
    commands and the model are told); sometimes a hostile name anywhere."""
    names = ["x", *(f"x{i}" for i in range(1, width - 1)), "y"][-width:] if width > 1 else ["y"]
    if width > 1:
        names[0] = "x"
    for i in range(width):
        if c.integer(0, 5) == 0:
            names[i] = c.choice(HOSTILE_NAMES) or c.choice(NO_NAMES)
    return names


def column_values(c: Choices, kind: str, n: int, rng: np.random.Generator) -> list[str]:
    """``n`` cells of a column of the given kind (see ``COLUMN_KINDS``)."""
    if kind == "spelled":  # each cell its own spelling of its own number
        return [moderate_number_text(c) for _ in range(n)]
    normal = rng.normal(size=n)
    if kind == "normal":
        values = normal * 10.0 ** c.integer(-30, 30)
    elif kind == "offset":  # far from zero, a small spread: 1e15 + k/8 and the like
        values = 10.0 ** c.integer(0, 300) * (1 + normal * 2.0 ** -c.integer(3, 52))
    elif kind == "integer":
        top = c.choice([10, 2**31, 2**53 + 1, 2**62, 2**63 - 1])
        return [str(int(v)) for v in rng.integers(-top, top, n, endpoint=True)]
    elif kind == "tiny":  # subnormal and near it
        values = normal * 10.0 ** c.integer(-324, -300)
    elif kind == "huge":  # squares beyond float64 (refused) one time in four
        values = normal * 10.0 ** (c.integer(100, 153) if c.integer(0, 3) else 300)
    elif kind == "constant":
        values = np.full(n, normal[0] if n else 1.0)
    elif kind == "binary":
        return [c.choice(["0", "1"]) for _ in range(n)]
    elif kind == "sparse":
        return [repr(float(v)) if v > 1.5 else "" for v in normal]
    else:  # a copy of a normal column: perfectly collinear with it
        values = np.round(normal, 2)
    style = c.choice(["repr", ".17g", ".6e", ".3f", "g"])
    return [repr(float(v)) if style == "repr" else format(float(v), style) for v in values]


def table(c: Choices) -> tuple[list[str], list[list[str]]]:
    """A header and rows of cells, column by column of one kind each; sometimes odd cells
    (text, blanks, numbers out of range) and rows of the wrong length."""
    width = c.integer(1, 5)
    names = column_names(c, width)
    n_rows = c.integer(0, 12) if c.integer(0, 3) else c.integer(13, 200)
    rng = np.random.default_rng(c.integer(0, 2**32 - 1))
    columns = [column_values(c, c.choice(COLUMN_KINDS), n_rows, rng) for _ in range(width)]
    rows = [list(row) for row in zip(*columns, strict=True)] if width else []
    rows += [[] for _ in range(n_rows - len(rows))]
    odd_share = c.choice([0, 0, 0, 5, 40])  # no odd cell, or one in 5 or 40
    for row in rows:
        if odd_share:
            for i in range(len(row)):
                if c.integer(1, odd_share) == 1:
                    row[i] = c.choice(ODD_CELLS)
        if c.integer(0, 60) == 0:  # a row of the wrong length
            del row[c.integer(0, len(row)) :]
            row += ["1"] * c.integer(0, 2)
    return names, rows


def quoted(cell: str, delimiter: str, always: bool) -> str:
    if always or any(c in cell for c in (delimiter, '"', "\n", "\r")):
        return '"' + cell.replace('"', '""') + '"'
    return cell


def csv_file(c: Choices) -> tuple[str, bytes]:
    """A file name and its bytes: a dialect, an encoding, maybe compression or damage."""
    names, rows = table(c)
    delimiter, ending = c.choice([(",", ".csv"), ("\t", ".tsv")])
    newline = c.choice(["\n", "\n", "\r\n"])
    always = bool(c.integer(0, 1))
    lines = [delimiter.join(quoted(cell, delimiter, always) for cell in names)]
    lines += [delimiter.join(quoted(cell, delimiter, always) for cell in row) for row in rows]
    text = newline.join(lines) + (newline if c.integer(0, 4) else "")
    if c.integer(0, 6) == 0:
        text = "\n" * c.integer(1, 3) + text
    encoding = c.choice(["utf-8"] * 12 + ["utf-8-sig", "latin-1", "utf-16"])
    data = text.encode(encoding, errors="replace")
    damage = c.choice(["none"] * 16 + ["bytes", "truncate", "nul"])
    if damage == "bytes" and data:
        at = c.integer(0, len(data) - 1)
        data = data[:at] + c.binary(1, 8) + data[at + 1 :]
    elif damage == "truncate":
        data = data[: c.integer(0, len(data))]
    elif damage == "nul":
        data = data.replace(b"\n", b"\x00\n", 1)
    compression = c.choice(["none"] * 12 + ["gzip", "gzip", "gzip-cut", "gzip-fake"])
    if compression == "gzip":
        data = gzip.compress(data, mtime=0)
    elif compression == "gzip-cut":
        packed = gzip.compress(data, mtime=0)
        data = packed[: c.integer(0, max(len(packed) - 1, 0))]
    if compression != "none":
        ending += ".gz"
    return "data" + ending, data


PARQUET_KINDS = ["float", "float", "int", "uint64", "int-near-2^63", "bool", "category", "text",
                 "decimal", "timestamp", "null", "list", "float-nan"]  # fmt: skip


def parquet_file(c: Choices) -> tuple[str, bytes]:
    """A Parquet file of odd column types, or its bytes damaged."""
    n = c.integer(0, 20)
    kinds = [c.choice(PARQUET_KINDS) for _ in range(c.integer(1, 4))]
    rng = np.random.default_rng(c.integer(0, 2**32 - 1))
    columns = {f"c{i}_{kind}": _parquet_column(kind, n, rng) for i, kind in enumerate(kinds)}
    if c.integer(0, 2):  # the first column named as the model's feature
        columns = {("x" if i == 0 else k): v for i, (k, v) in enumerate(columns.items())}
    columns["y"] = pa.array(rng.normal(size=n))
    buffer = io.BytesIO()
    pq.write_table(pa.table(columns), buffer, compression=c.choice(["snappy", "none"]))
    data = buffer.getvalue()
    damage = c.choice(["none"] * 5 + ["flip", "truncate"])
    if damage == "flip":
        at = c.integer(0, len(data) - 1)
        data = data[:at] + bytes([data[at] ^ c.integer(1, 255)]) + data[at + 1 :]
    elif damage == "truncate":
        data = data[: c.integer(0, len(data) - 1)]
    return "data.parquet", data


def data_file(c: Choices) -> tuple[str, bytes]:
    """A CSV file three times in four, else a Parquet file."""
    return parquet_file(c) if c.integer(0, 3) == 0 else csv_file(c)


def _parquet_column(kind: str, n: int, rng: np.random.Generator) -> pa.Array:
    values = rng.normal(size=n) * 10.0 ** rng.integers(-300, 300)
    if kind == "float":
        return pa.array(values)
    if kind == "float-nan":
        return pa.array(np.where(rng.random(n) < 0.3, np.nan, values))
    if kind == "int":
        return pa.array(rng.integers(-(2**63), 2**63 - 1, n, dtype=np.int64))
    if kind == "uint64":  # near 2^62 .. 2^64, as ids and counters are
        return pa.array(rng.integers(2**62, 2**64 - 1, n, dtype=np.uint64))
    if kind == "int-near-2^63":
        return pa.array(2**63 - 1 - rng.integers(0, 2**20, n, dtype=np.int64))
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


# -- the same generators as hypothesis strategies (they shrink) -----------------------------


def strategy(generate: Callable[[Choices], T]) -> st.SearchStrategy[T]:
    """``generate`` driven by hypothesis."""
    return st.composite(lambda draw: generate(HypothesisChoices(draw)))()
