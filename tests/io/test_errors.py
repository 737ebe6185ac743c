"""Bad input: each error names the file, column or line and says the fix."""

from __future__ import annotations

import gzip
import os
import re
import zipfile

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stablefit.errors import StablefitInputError
from stablefit.io import open_source
from stablefit.io.csv import SNIFF_BYTES

# Enough rows that the last lines are past the block used to infer the column types.
LATE_ROWS = SNIFF_BYTES // len("1.5,2,3\n") + 10_000
LATE_LINE = LATE_ROWS + 2


def read_all(*args, **kwargs) -> None:
    for _ in open_source(*args, **kwargs).batches():
        pass


def late_file(tmp_path, last_line: str, name: str = "late.csv") -> str:
    path = tmp_path / name
    body = "a,b,price\n" + "1.5,2,3\n" * LATE_ROWS + last_line + "\n" + "1,2,3\n" * 5
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(body.encode()))
    else:
        path.write_text(body)
    return str(path)


def test_file_not_found(tmp_path):
    with pytest.raises(StablefitInputError, match=r"missing\.csv: file not found"):
        open_source(tmp_path / "missing.csv", target="y")


@pytest.mark.parametrize("name", ["data.xlsx", "data.json", "data"])
def test_unsupported_file_type_lists_the_supported_ones(tmp_path, name):
    path = tmp_path / name
    path.write_text("a\n1\n")
    with pytest.raises(StablefitInputError, match=r"unsupported file type.*\.csv.*\.parquet"):
        open_source(path)


def test_a_directory_without_data_files(tmp_path):
    (tmp_path / "data.parquet").mkdir()
    with pytest.raises(StablefitInputError, match="holds no CSV, Parquet or Arrow IPC files"):
        open_source(tmp_path / "data.parquet")


@pytest.mark.parametrize("name", ["empty.csv", "empty.parquet"])
def test_empty_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"")
    with pytest.raises(StablefitInputError, match=r"empty \(0 bytes\)"):
        open_source(path)


def test_compressed_file_with_nothing_in_it(tmp_path):
    path = tmp_path / "nothing.csv.gz"
    path.write_bytes(gzip.compress(b""))
    with pytest.raises(StablefitInputError, match="no header line and no rows"):
        open_source(path)


def test_header_without_rows(tmp_path):
    path = tmp_path / "header.csv"
    path.write_text("a,b,price\n")
    with pytest.raises(StablefitInputError, match="header line but no data rows"):
        open_source(path, target="price")


def test_parquet_without_rows(tmp_path):
    path = tmp_path / "none.parquet"
    pq.write_table(pa.table({"a": pa.array([], pa.float64())}), path)
    with pytest.raises(StablefitInputError, match="no rows"):
        open_source(path)


def test_not_a_parquet_file(tmp_path):
    path = tmp_path / "fake.parquet"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(
        StablefitInputError, match=r"the file is text \(a CSV file\?\), not Parquet"
    ):
        open_source(path)


def test_parquet_names_that_are_not_utf8(tmp_path):
    """Damaged metadata: pyarrow's decoding of the column names fails as the file opens."""
    path = tmp_path / "names.parquet"
    pq.write_table(pa.table({"zzzz": [1.0, 2.0], "y": [3.0, 4.0]}), path)
    path.write_bytes(path.read_bytes().replace(b"zzzz", b"\x8f\x8f\x8f\x8f"))
    with pytest.raises(StablefitInputError, match=r"names\.parquet: .*not UTF-8 text"):
        open_source(path, target="y")


def test_ragged_row_names_its_line(tmp_path):
    path = tmp_path / "ragged.csv"
    path.write_text("a,b\n1,2\n3,4,5\n6,7\n")
    with pytest.raises(StablefitInputError, match=r"line 3 has 3 fields where the header has 2"):
        open_source(path)


@pytest.mark.parametrize("name", ["late.csv", "late.csv.gz"])
def test_ragged_row_late_in_the_file_names_its_line(tmp_path, name):
    path = late_file(tmp_path, "1,2", name)
    source = open_source(path, target="price")  # the first block is fine
    with pytest.raises(StablefitInputError, match=rf"line {LATE_LINE} has 2 fields.*'1,2'"):
        read_all(path, target="price")
    assert source.schema.feature_names == ("a", "b")


@pytest.mark.parametrize("name", ["late.csv", "late.csv.gz"])
def test_text_late_in_a_numeric_column_names_column_line_and_value(tmp_path, name):
    path = late_file(tmp_path, "1,oops,3", name)
    with pytest.raises(
        StablefitInputError, match=rf"column 'b' holds 'oops' at line {LATE_LINE}.*empty cell or NA"
    ):
        read_all(path, target="price")


def test_bad_value_in_a_boolean_column(tmp_path):
    path = tmp_path / "flags.csv"
    path.write_text("flag,y\n" + "true,1\n" * (SNIFF_BYTES // 7 + 100) + "maybe,1\n")
    line = SNIFF_BYTES // 7 + 102
    with pytest.raises(StablefitInputError, match=rf"'flag' holds 'maybe' at line {line}"):
        read_all(path, target="y")


def test_missing_target_suggests_the_closest_name(tmp_path):
    path = tmp_path / "houses.csv"
    path.write_text("rooms,area,price\n3,70,100\n")
    with pytest.raises(StablefitInputError) as error:
        open_source(path, target="prices")
    message = str(error.value)
    assert "no column named 'prices'" in message
    assert "Did you mean 'price'?" in message
    assert "'rooms', 'area', 'price'" in message


def test_missing_target_matches_case(tmp_path):
    frame = pd.DataFrame({"Price": [1.0], "x": [2.0]})
    with pytest.raises(StablefitInputError, match="Did you mean 'Price'"):
        open_source(frame, target="price")


def test_non_numeric_target(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("x,label\n1,cat\n2,dog\n")
    with pytest.raises(
        StablefitInputError, match=r"target column 'label' is not numeric.*'cat' at line 2"
    ):
        open_source(path, target="label")


def test_non_numeric_features_are_named_and_the_flag_offered(tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_text("city,x,when,y\nParis,1,2024-01-01,2\n")
    with pytest.raises(StablefitInputError) as error:
        open_source(path, target="y")
    message = str(error.value)
    assert "'city': text such as 'Paris' at line 2" in message
    assert "'when': date32[day] values" in message
    assert "drop_non_numeric=True" in message and "--drop-non-numeric" in message


@pytest.mark.parametrize("kind", ["pandas", "polars", "arrow"])
def test_non_numeric_features_in_frames(kind):
    frame = pd.DataFrame({"x": [1.0, 2.0], "city": ["Oslo", "Rome"], "y": [1.0, 2.0]})
    data = {"pandas": frame, "polars": pl.from_pandas(frame), "arrow": pa.Table.from_pandas(frame)}
    with pytest.raises(StablefitInputError, match=r"'city'.*'Oslo' at row 0.*drop_non_numeric"):
        open_source(data[kind], target="y")


def test_duplicate_column_names(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("a,b,a,y\n1,2,3,4\n")
    with pytest.raises(
        StablefitInputError, match=r"duplicate column names \('a' at positions 1, 3\)"
    ):
        open_source(path, target="y")
    frame = pd.DataFrame([[1.0, 2.0]], columns=["a", "a"])
    with pytest.raises(StablefitInputError, match="duplicate column names"):
        open_source(frame)


def test_X_and_y_of_different_lengths():
    with pytest.raises(StablefitInputError, match="X has 3 rows but y has 4"):
        open_source(np.ones((3, 2)), np.ones(4))
    with pytest.raises(StablefitInputError, match="X has 2 rows but y has 3"):
        open_source(pd.DataFrame({"a": [1.0, 2.0]}), pd.Series([1.0, 2.0, 3.0]))


def test_no_feature_columns(tmp_path):
    with pytest.raises(StablefitInputError, match="no feature columns"):
        open_source(np.ones((3, 0)), np.ones(3))
    path = tmp_path / "only_target.csv"
    path.write_text("name,y\nbob,1\n")
    with pytest.raises(StablefitInputError, match=r"no feature columns \('name' dropped"):
        open_source(path, target="y", drop_non_numeric=True)
    # Every other column left out for its own reason: each named with it, none of them
    # called non-numeric (as all were before).
    path.write_text("Unnamed: 0,a,b,y\n0,1,2,3\n1,2,1,4\n")
    with pytest.raises(
        StablefitInputError,
        match=r"no feature columns \('a', 'b' excluded; 'Unnamed: 0' left out as unnamed\) "
        "besides the target 'y'",
    ):
        open_source(path, target="y", exclude=["a", "b"])


def test_three_dimensional_array():
    with pytest.raises(StablefitInputError, match=r"3 dimensions.*reshape"):
        open_source(np.ones((4, 2, 2)))


def test_empty_array():
    with pytest.raises(StablefitInputError, match="X has no rows"):
        open_source(np.ones((0, 2)))


@pytest.mark.parametrize(
    ("X", "match"),
    [
        (np.array([["a", "b"]]), "X holds text"),
        (np.array([[1.0 + 1j]]), "complex"),
        (np.array([[1, "b"]], dtype=object), r"non-numeric value 'b' at index \(0, 1\)"),
    ],
)
def test_non_numeric_arrays(X, match):
    with pytest.raises(StablefitInputError, match=match):
        open_source(X)


def test_target_must_be_one_dimensional_and_numeric():
    with pytest.raises(StablefitInputError, match=r"y has shape \(3, 2\)"):
        open_source(np.ones((3, 2)), np.ones((3, 2)))
    with pytest.raises(StablefitInputError, match=r"target 'y' is not numeric.*'a'"):
        open_source(np.ones((2, 2)), pd.Series(["a", "b"]))


def test_target_given_twice_or_for_an_unnamed_array():
    with pytest.raises(StablefitInputError, match="both y and target"):
        open_source(np.ones((3, 2)), np.ones(3), target="y")
    with pytest.raises(StablefitInputError, match="pass the target as y"):
        open_source(np.ones((3, 2)), target="y")


def test_feature_names_must_match_the_columns():
    with pytest.raises(StablefitInputError, match="2 names but X has 3 columns"):
        open_source(np.ones((2, 3)), feature_names=["a", "b"])


def test_batch_rows_must_be_positive():
    with pytest.raises(StablefitInputError, match="batch_rows must be a positive integer"):
        open_source(np.ones(3), batch_rows=0)


def test_requested_columns_that_are_missing_are_named_with_a_suggestion(tmp_path):
    path = tmp_path / "new.csv"
    path.write_text("rooms,area_m2,price\n3,70,100\n")
    with pytest.raises(
        StablefitInputError, match=r"missing column\(s\) 'area' \(did you mean 'area_m2'\?\)"
    ):
        open_source(path, columns=["rooms", "area"])


def test_requested_column_that_is_not_numeric(tmp_path):
    path = tmp_path / "new.csv"
    path.write_text("rooms,city\n3,Oslo\n")
    with pytest.raises(StablefitInputError, match=r"'city': text such as 'Oslo'") as error:
        open_source(path, columns=["rooms", "city"])
    assert "drop_non_numeric" not in str(error.value)


def test_columns_are_for_tables():
    with pytest.raises(StablefitInputError, match=r"X\[:, \[...\]\]"):
        open_source(np.ones((2, 2)), columns=["x0"])


def test_text_that_is_not_utf8_says_so(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("city,x,y\nMünchen,1,2\n".encode("latin-1"))
    with pytest.raises(StablefitInputError, match=r"'city': text that is not UTF-8.*save the file"):
        open_source(path, target="y")


def test_a_quoted_name_over_lines_that_is_not_utf8(tmp_path):
    """The header's bytes past its first line break, inside quotes (found by tests/fuzz)."""
    path = tmp_path / "names.csv"
    path.write_bytes(b'"a\nM\xfcnchen",y\n1,2\n')
    with pytest.raises(StablefitInputError, match=r"line 2 holds the byte 0xfc, which is not"):
        open_source(path, target="y")


def long_names(count: int) -> list[str]:
    """Names whose header line is longer than the first block read (SNIFF_BYTES)."""
    return [f"c{i}_" + "n" * (2 * SNIFF_BYTES // count) for i in range(count)]


def test_a_header_longer_than_the_first_block_is_read(tmp_path):
    path = tmp_path / "long.csv"
    names = [*long_names(20), "y"]
    path.write_text(",".join(names) + "\n" + ",".join("1" * len(names)) + "\n")
    assert list(open_source(path, target="y").schema.feature_names) == names[:-1]


def test_a_long_header_that_is_not_utf8_past_the_first_block(tmp_path):
    path = tmp_path / "long.csv"
    names = [*long_names(20), "M\xfcnchen", "y"]
    path.write_bytes((",".join(names) + "\n" + ",".join("1" * len(names)) + "\n").encode("latin-1"))
    with pytest.raises(StablefitInputError, match=r"long\.csv: .*not UTF-8"):
        open_source(path, target="y")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_path_that_is_not_a_regular_file_says_what_it_is(tmp_path):
    """A named pipe read as an empty file, a symbolic link loop as 'file not found'."""
    (tmp_path / "one.csv").symlink_to(tmp_path / "two.csv")
    (tmp_path / "two.csv").symlink_to(tmp_path / "one.csv")
    (tmp_path / "dangling.parquet").symlink_to(tmp_path / "gone.parquet")
    os.mkfifo(tmp_path / "pipe.csv")
    for name, message in [
        ("one.csv", "one.csv: a loop of symbolic links"),
        ("dangling.parquet", "dangling.parquet: a symbolic link to '"),
        ("pipe.csv", "pipe.csv: a named pipe; stablefit reads the data more than once"),
    ]:
        with pytest.raises(StablefitInputError, match=re.escape(message)):
            open_source(tmp_path / name, target="y")


def test_a_file_in_another_format_than_its_name_says_is_named_as_what_it_is(tmp_path):
    """An Excel workbook or a Parquet file named .csv was 'line 1 holds a NUL byte', a CSV
    file named .parquet 'Parquet magic bytes not found in footer'."""
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [2.0, 4.5, 5.0]})
    frame.to_parquet(parquet := tmp_path / "table.parquet")
    frame.to_csv(csv := tmp_path / "table.csv", index=False)
    with zipfile.ZipFile(workbook := tmp_path / "book.xlsx", "w") as archive:
        archive.writestr("xl/workbook.xml", "<workbook/>")  # an .xlsx is a ZIP archive
    renamed = {
        "book.csv": (workbook, "the file is a ZIP archive (as an Excel .xlsx workbook is), "
                     "not CSV text; save the sheet as CSV, e.g. pandas.read_excel"),
        "table-parquet.csv": (parquet, "the file is a Parquet file, not CSV text; give it a "
                              "name ending in .parquet"),
        "zipped.csv": (None, "the file is gzip-compressed, not CSV text; give it a name "
                       "ending in .csv.gz"),
        "table-csv.parquet": (csv, "the file is text (a CSV file?), not Parquet; give it a "
                              "name ending in .csv"),
    }  # fmt: skip
    for name, (original, message) in renamed.items():
        data = gzip.compress(csv.read_bytes()) if original is None else original.read_bytes()
        (tmp_path / name).write_bytes(data)
        with pytest.raises(StablefitInputError, match=re.escape(f"{name}: {message}")):
            open_source(tmp_path / name, target="y")
    # A damaged Parquet file keeps its own error, whatever its first bytes.
    (tmp_path / "cut.parquet").write_bytes(parquet.read_bytes()[:40])
    with pytest.raises(StablefitInputError, match="not a readable Parquet file"):
        open_source(tmp_path / "cut.parquet", target="y")


def test_x_and_y_from_pandas_with_different_row_labels_are_refused():
    """A y sampled or sorted apart from X was paired with X's rows by position: a fit of
    shuffled pairs, silently (statsmodels refuses such a pair too)."""
    X = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": [0.5, 1.0, 0.0, 2.0]})
    y = pd.Series([2.0, 4.0, 5.0, 9.0])
    with pytest.raises(
        StablefitInputError,
        match=re.escape("different row labels (index; at position 0, X has 0 and y 3)"),
    ):
        open_source(X, y.sort_values(ascending=False))
    with pytest.raises(StablefitInputError, match=r"y.loc\[X.index\]"):
        open_source(X.iloc[::-1], y)
    # Same labels, or y without labels: paired as given.
    assert open_source(X, y).schema.feature_names == ("a", "b")
    assert open_source(X.iloc[::-1], y.iloc[::-1]).schema.feature_names == ("a", "b")
    assert open_source(X.iloc[::-1], y.to_numpy()).schema.feature_names == ("a", "b")


def test_a_target_name_passed_as_y_says_to_pass_target():
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "y": [2.0, 4.5, 5.0]})
    with pytest.raises(StablefitInputError, match=re.escape("pass target='y' instead")):
        open_source(frame, "y")


def test_an_object_column_of_numbers_kept_as_text_or_decimals_names_a_value():
    """'dtype object' alone, for a column whose every value converts (a '2' among ints, a
    Decimal): nothing said which value or how to convert it."""
    from decimal import Decimal

    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "y": [1.0, 2.0, 4.0]})
    for values, shown in [
        ([1, "2", 3], "'2' (str) at row 1"),
        ([Decimal("1.5"), None, 2], "Decimal('1.5') (Decimal) at row 0"),
    ]:
        with pytest.raises(
            StablefitInputError,
            match=re.escape(f"'c': dtype object, e.g. {shown}; pandas.to_numeric"),
        ):
            open_source(frame.assign(c=values), target="y")
