"""Every kind of source yields the same float64 batches for the same data."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stablefit.errors import StablefitInputError
from stablefit.io import ArraySource, csv, open_source

N_ROWS = 1037  # not a multiple of any batch size used below


@pytest.fixture
def frame() -> pd.DataFrame:
    """Floats with NaN and inf, integers, booleans, and the target ``price``."""
    rng = np.random.default_rng(7)
    a = rng.standard_normal(N_ROWS) * 1e3
    a[[3, 500]] = np.nan
    a[10] = np.inf
    a[11] = -np.inf
    return pd.DataFrame(
        {
            "a": a,
            "count": rng.integers(-50, 50, N_ROWS),
            "flag": rng.random(N_ROWS) < 0.5,
            "price": rng.standard_normal(N_ROWS),
        }
    )


def expected(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    X = np.column_stack([frame["a"], frame["count"], frame["flag"]]).astype(np.float64)
    return X, frame["price"].to_numpy(np.float64)


def gather(source) -> tuple[np.ndarray, np.ndarray | None, list[int], list[int]]:
    batches = list(source.batches())
    X = np.vstack([b.X for b in batches])
    y = None if batches[0].y is None else np.concatenate([b.y for b in batches])
    return X, y, [b.first_row for b in batches], [b.n_rows for b in batches]


def write_csv(frame: pd.DataFrame, path, sep: str = ",") -> None:
    # inf is written as "inf" and NaN as an empty cell, as spreadsheets and pandas do.
    frame.to_csv(path, index=False, sep=sep, na_rep="")


def all_sources(frame: pd.DataFrame, tmp_path, batch_rows: int) -> dict[str, object]:
    X, y = expected(frame)
    csv_path = tmp_path / "data.csv"
    write_csv(frame, csv_path)
    gz_path = tmp_path / "data.csv.gz"
    gz_path.write_bytes(gzip.compress(csv_path.read_bytes()))
    zst_path = tmp_path / "data.csv.zst"  # as Polars and DuckDB write with compression="zstd"
    zst_path.write_bytes(pa.compress(csv_path.read_bytes(), codec="zstd", asbytes=True))
    tsv_path = tmp_path / "data.tsv"
    write_csv(frame, tsv_path, sep="\t")
    parquet_path = tmp_path / "data.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), parquet_path)
    by_name = {"target": "price", "batch_rows": batch_rows}
    names = ["a", "count", "flag"]
    return {
        "numpy": open_source(X, y, feature_names=names, batch_rows=batch_rows),
        "numpy target column": open_source(
            np.column_stack([X, y]), feature_names=[*names, "price"], **by_name
        ),
        "pandas": open_source(frame, **by_name),
        "pandas + y": open_source(frame[names], frame["price"], batch_rows=batch_rows),
        "pandas nullable": open_source(frame.convert_dtypes(), **by_name),
        "polars": open_source(pl.from_pandas(frame), **by_name),
        "arrow table": open_source(pa.Table.from_pandas(frame), **by_name),
        "arrow batch": open_source(pa.RecordBatch.from_pandas(frame), **by_name),
        "csv": open_source(csv_path, **by_name),
        "csv str path": open_source(str(csv_path), **by_name),
        "csv.gz": open_source(gz_path, **by_name),
        "csv.zst": open_source(zst_path, **by_name),
        "tsv": open_source(tsv_path, **by_name),
        "parquet": open_source(parquet_path, **by_name),
    }


@pytest.mark.parametrize("batch_rows", [1, 100, 65536])
def test_every_source_yields_the_same_batches(frame, tmp_path, batch_rows):
    X, y = expected(frame)
    for kind, source in all_sources(frame, tmp_path, batch_rows).items():
        got_X, got_y, first_rows, sizes = gather(source)
        assert source.schema.feature_names == ("a", "count", "flag"), kind
        assert source.schema.target_name == ("y" if kind == "numpy" else "price"), kind
        assert got_X.dtype == np.float64 and got_y.dtype == np.float64, kind
        np.testing.assert_array_equal(got_X, X, err_msg=kind)
        np.testing.assert_array_equal(got_y, y, err_msg=kind)
        assert max(sizes) <= batch_rows, kind
        assert first_rows == list(np.cumsum([0, *sizes[:-1]])), kind
        assert sum(sizes) == N_ROWS, kind


def test_missing_and_infinite_values_are_kept(tmp_path):
    path = tmp_path / "messy.csv"
    path.write_text("x,y\n1,2\n,3\nNA,4\nnan,5\ninf,6\n-inf,7\n1e400,8\n")
    X, y, _, _ = gather(open_source(path, target="y"))
    np.testing.assert_array_equal(X[:, 0], [1, np.nan, np.nan, np.nan, np.inf, -np.inf, np.inf])
    np.testing.assert_array_equal(y, [2, 3, 4, 5, 6, 7, 8])


def test_csv_rows_are_named_by_file_line(tmp_path):
    path = tmp_path / "lines.csv"
    path.write_text("x,y\n1,2\n3,4\n")
    schema = open_source(path, target="y").schema
    assert (schema.row_label, schema.row_offset) == ("line", 2)
    assert schema.format_rows([0]) == "line 2"
    assert open_source(np.ones((2, 1))).schema.format_rows([0]) == "row 0"


def test_blank_line_is_a_row_of_missing_values_so_line_numbers_stay_right(tmp_path):
    path = tmp_path / "blank.csv"
    path.write_text("x,y\n1,2\n\n3,4\n")
    X, y, _, _ = gather(open_source(path, target="y"))
    np.testing.assert_array_equal(X[:, 0], [1, np.nan, 3])
    np.testing.assert_array_equal(y, [2, np.nan, 4])


@pytest.mark.parametrize("name", ["tail.csv", "tail.csv.gz"])
@pytest.mark.parametrize("chunk_bytes", [7, 12, 1 << 20])
@pytest.mark.parametrize("tail", ["\n\n", "\n\n\n\n", "\r\n\r\n", "\n\r\n\n"])
def test_blank_lines_at_the_end_of_a_file_are_no_rows(tmp_path, name, chunk_bytes, tail):
    """A file ending in blank lines (an editor's, a concatenation's) was read with a row of
    NaN for each, so the fit stopped on 'missing values'; pandas and pyarrow skip them.
    Chunks as short as a line, or cut inside the blank lines, end the same."""
    text = "x,y\n1,2\n\n3,4\n5,6" + tail
    path = write_text_file(tmp_path / name, text)
    source = open_source(path, target="y")
    source.chunk_bytes = chunk_bytes
    X, y, _, _ = gather(source)
    np.testing.assert_array_equal(X[:, 0], [1, np.nan, 3, 5])  # the blank line between rows stays
    np.testing.assert_array_equal(y, [2, np.nan, 4, 6])


def test_csv_types_come_from_all_rows_not_just_the_first_block(tmp_path):
    # Integers in the first blocks, a decimal and an empty cell far later.
    lines = ["n,y"] + [f"{i},1" for i in range(700_000)] + ["2.5,1", ",1"]
    path = tmp_path / "late.csv"
    path.write_text("\n".join(lines) + "\n")
    X, _, _, _ = gather(open_source(path, target="y"))
    assert X.shape == (700_002, 1)
    assert X[-2, 0] == 2.5 and np.isnan(X[-1, 0])
    np.testing.assert_array_equal(X[:700_000, 0], np.arange(700_000.0))


def test_windows_line_endings_and_no_final_newline(tmp_path):
    path = tmp_path / "crlf.csv"
    path.write_bytes(b"x,y\r\n1,2\r\n3,4")
    X, y, _, _ = gather(open_source(path, target="y"))
    np.testing.assert_array_equal(X[:, 0], [1, 3])
    np.testing.assert_array_equal(y, [2, 4])


def write_text_file(path, text: str):
    if path.suffix == ".gz":
        with gzip.open(path, "wt") as stream:
            stream.write(text)
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["wide.csv", "wide.csv.gz"])  # memory-mapped and streamed
@pytest.mark.parametrize("chunk_bytes", [7, 100, 1 << 20])
def test_chunks_cut_anywhere_read_every_line_once(tmp_path, name, chunk_bytes):
    # Chunks shorter than a line, a few lines long, or the whole file; no final newline.
    rng = np.random.default_rng(chunk_bytes)
    values = np.round(rng.normal(size=(300, 6)) * 1e4, 6)
    lines = [",".join(repr(float(v)) for v in row) for row in values]
    path = write_text_file(tmp_path / name, "a,b,c,d,e,y\n" + "\n".join(lines))
    source = open_source(path, target="y")
    source.chunk_bytes = chunk_bytes
    X, y, _, _ = gather(source)
    np.testing.assert_array_equal(X, values[:, :5])
    np.testing.assert_array_equal(y, values[:, 5])


def test_a_file_cut_short_while_it_is_read_is_named_as_changed(tmp_path):
    """Another program truncates the file mid-line while a pass reads it: an error naming
    the change (files are read in buffers, not memory-mapped: no SIGBUS)."""
    lines = [f"{i},{i * 0.5!r}" for i in range(20_000)]
    path = write_text_file(tmp_path / "growing.csv", "x,y\n" + "\n".join(lines) + "\n")
    source = open_source(path, target="y")
    source.chunk_bytes = 4096
    batches = source.batches()
    next(batches)
    data = path.read_bytes()
    cut = data.index(b"\n", len(data) // 2) + 3  # "1000" of "10000,5000.0": one field
    with open(path, "r+b") as file:
        file.truncate(cut)  # past what is read ahead
    with pytest.raises(StablefitInputError, match="changed while it was being read"):
        list(batches)


@pytest.mark.parametrize("name", ["long.csv", "long.csv.gz"])
def test_a_line_without_end_is_refused_not_buffered(tmp_path, monkeypatch, name):
    path = write_text_file(tmp_path / name, "x,y\n1,2\n" + "7" * 5000 + ",3\n4,5\n")
    source = open_source(path, target="y")
    source.chunk_bytes = 64
    monkeypatch.setattr(csv, "MAX_LINE_BYTES", 1000)
    with pytest.raises(StablefitInputError, match="no line break in"):
        gather(source)


@pytest.mark.parametrize(
    ("columns", "said"), [(3_000_000, r"at least [\d,]+ columns"), (25_000, "25,000 columns")]
)
def test_a_header_of_too_many_columns_is_refused_before_it_is_parsed(tmp_path, columns, said):
    # 3 million columns in 25 MB: parsed, pyarrow's per-column state took the machine's
    # memory. Refused from the first MiB, whether or not the header ends within it.
    path = tmp_path / "wide.csv"
    with path.open("w") as out:
        out.write(",".join(f"c{i}" for i in range(columns)) + "\n")
        out.write(",".join(["1"] * columns) + "\n")
    with pytest.raises(StablefitInputError, match=f"{said}; .* at most 20,000 columns"):
        open_source(path, target="c0")


def test_a_semicolon_separated_csv_is_named_as_such(tmp_path):
    # As spreadsheets write CSV where the decimal point is a comma.
    path = write_text_file(tmp_path / "euro.csv", "a;b;y\n0,5;1,25;3\n1,5;2;4,75\n")
    with pytest.raises(StablefitInputError, match=r"'a;b;y' is separated by ';', not ','"):
        open_source(path, target="y")
    # A comma-separated header with a ';' inside a name is read as it is.
    path = write_text_file(tmp_path / "names.csv", "a;1,y\n1,2\n3,5\n")
    assert open_source(path, target="y").schema.feature_names == ("a;1",)


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("# exported 2026-11-30\nx,y\n1,2\n2,4\n", "line 1, '# exported 2026-11-30', looks"),
        ("\ufeff# units: m\nx,y\n1,2\n2,4\n", "line 1, '# units: m', looks like a comment"),
        ("x,y\n1,2\n# a note\n2,4\n", "line 3, '# a note', looks like a comment"),
        ("x,y\n" + "1,2\n" * 300_000 + "# late\n2,4\n", "line 300002, '# late', looks"),
    ],
    ids=["before the header", "after a byte-order mark", "a row", "a row past the first block"],
)
def test_a_comment_line_is_named_as_one(tmp_path, text, said):
    path = write_text_file(tmp_path / "commented.csv", text)
    with pytest.raises(StablefitInputError, match=f"{said}.*grep -v '\\^#'"):
        gather(open_source(path, target="y"))
    # A header whose first name starts with '#' is a header, not a comment.
    path = write_text_file(tmp_path / "hash.csv", "#id,x,y\n1,1,2\n2,3,4\n3,4,7\n")
    assert open_source(path, target="y").schema.feature_names == ("#id", "x")


def test_without_target_there_is_no_y(tmp_path):
    path = tmp_path / "features.csv"
    path.write_text("a,b\n1,2\n3,4\n")
    source = open_source(path)
    X, y, _, _ = gather(source)
    assert y is None and source.schema.target_name is None
    np.testing.assert_array_equal(X, [[1, 2], [3, 4]])


def test_drop_non_numeric_records_the_columns_and_why(tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_text("city,day,x,y\nParis,2024-01-01,1,2\nOslo,2024-01-02,3,4\n")
    source = open_source(path, target="y", drop_non_numeric=True)
    assert source.schema.feature_names == ("x",)
    dropped = {d.name: d.reason for d in source.schema.dropped}
    assert set(dropped) == {"city", "day"}
    assert "Paris" in dropped["city"] and "line 2" in dropped["city"]
    assert "date" in dropped["day"]
    X, _, _, _ = gather(source)
    np.testing.assert_array_equal(X[:, 0], [1, 3])


@pytest.mark.parametrize("kind", ["pandas", "polars", "arrow"])
def test_drop_non_numeric_in_frames(kind):
    frame = pd.DataFrame({"name": ["a", "b"], "when": pd.to_datetime(["2024-01-01"] * 2)})
    frame["x"] = [1.0, 2.0]
    frame["y"] = [3.0, 4.0]
    data = {"pandas": frame, "polars": pl.from_pandas(frame), "arrow": pa.Table.from_pandas(frame)}
    source = open_source(data[kind], target="y", drop_non_numeric=True)
    assert source.schema.feature_names == ("x",)
    assert [d.name for d in source.schema.dropped] == ["name", "when"]


def test_one_dimensional_inputs_are_one_feature():
    X, _, _, _ = gather(open_source(np.arange(5), np.zeros(5)))
    assert X.shape == (5, 1)
    series_source = open_source(pd.Series(np.arange(5.0), name="size"), np.zeros(5))
    assert series_source.schema.feature_names == ("size",)
    polars_source = open_source(pl.Series("size", np.arange(5.0)), np.zeros(5))
    assert polars_source.schema.feature_names == ("size",)


def test_target_name_comes_from_a_series():
    source = open_source(np.ones((3, 2)), pd.Series([1.0, 2.0, 3.0], name="price"))
    assert source.schema.target_name == "price"
    _, y, _, _ = gather(source)
    np.testing.assert_array_equal(y, [1, 2, 3])


def test_object_array_of_numbers_is_accepted():
    X, _, _, _ = gather(open_source(np.array([[1, 2.5], [None, 3]], dtype=object)))
    np.testing.assert_array_equal(X, [[1, 2.5], [np.nan, 3]])


def test_reiteration_gives_identical_passes(frame, tmp_path):
    for kind, source in all_sources(frame, tmp_path, 100).items():
        first, second = gather(source), gather(source)
        np.testing.assert_array_equal(first[0], second[0], err_msg=kind)
        np.testing.assert_array_equal(first[1], second[1], err_msg=kind)
        assert first[2] == second[2], kind


def test_stopping_a_pass_early_leaves_the_next_pass_whole(tmp_path):
    path = tmp_path / "big.csv"
    path.write_text("x,y\n" + "1,2\n" * 300_000)
    source = open_source(path, target="y", batch_rows=1000)
    next(iter(source.batches()))
    X, _, _, _ = gather(source)
    assert X.shape == (300_000, 1)


def test_numpy_input_is_never_written_to():
    X = np.arange(12.0).reshape(4, 3)
    y = np.arange(4.0)
    X_before, y_before = X.copy(), y.copy()
    source = open_source(X, y, batch_rows=3)
    assert isinstance(source, ArraySource)
    for batch in source.batches():
        with pytest.raises(ValueError, match="read-only"):
            batch.X[0, 0] = -1.0
        with pytest.raises(ValueError, match="read-only"):
            batch.y[0] = -1.0
    np.testing.assert_array_equal(X, X_before)
    np.testing.assert_array_equal(y, y_before)
    assert X.flags.writeable and y.flags.writeable


def test_frames_are_not_modified(frame):
    before = frame.copy()
    for data in (frame, pa.Table.from_pandas(frame)):
        list(open_source(data, target="price", drop_non_numeric=True).batches())
    pd.testing.assert_frame_equal(frame, before)


def test_files_are_not_modified(frame, tmp_path):
    path = tmp_path / "data.csv"
    write_csv(frame, path)
    content, mtime = path.read_bytes(), path.stat().st_mtime_ns
    list(open_source(path, target="price").batches())
    assert path.read_bytes() == content and path.stat().st_mtime_ns == mtime


def test_large_integers_become_the_nearest_double():
    big = np.array([[2**60 + 1], [1]], dtype=np.int64)
    table = pa.table({"n": big[:, 0]})
    for data in (big, table):
        X, _, _, _ = gather(open_source(data))
        assert X[0, 0] == float(2**60)


@pytest.mark.parametrize("kind", ["csv", "parquet", "pandas", "polars", "arrow"])
def test_columns_selects_features_in_the_given_order(tmp_path, kind):
    frame = pd.DataFrame({"city": ["Oslo", "Rome"], "a": [1.0, 2.0], "b": [3, 4], "y": [5.0, 6.0]})
    data = {
        "pandas": frame,
        "polars": pl.from_pandas(frame),
        "arrow": pa.Table.from_pandas(frame),
    }.get(kind)
    if data is None:
        data = tmp_path / f"data.{kind}"
        if kind == "csv":
            frame.to_csv(data, index=False)
        else:
            frame.to_parquet(data)
    source = open_source(data, columns=["b", "a"])
    assert source.schema.feature_names == ("b", "a")
    assert source.schema.target_name is None and source.schema.dropped == ()
    X, y, _, _ = gather(source)
    assert y is None
    np.testing.assert_array_equal(X, [[3, 1], [4, 2]])


def test_the_standard_input_is_refused_with_the_reason():
    with pytest.raises(StablefitInputError, match=r"standard input cannot be read.*save it"):
        open_source("-", target="y")
