"""Many files as one table: a glob or a directory of CSV, Parquet or Arrow IPC files."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

import stablefit
from stablefit.errors import StablefitInputError
from stablefit.io import open_source
from stablefit.io.files import natural_key

N_ROWS = 1200
PARTS = (0, 300, 700, 1200)  # uneven files


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    rng = np.random.default_rng(11)
    frame = pd.DataFrame(
        {
            "a": rng.normal(size=N_ROWS) * 1e3 + 5e4,
            "b": rng.integers(-20, 20, N_ROWS),
            "c": rng.normal(size=N_ROWS),
        }
    )
    frame["y"] = 7 - 0.003 * frame.a + 2 * frame.b + 0.5 * frame.c + rng.normal(size=N_ROWS)
    return frame


def write_frame(frame: pd.DataFrame, path) -> None:
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    elif path.suffix == ".feather":
        frame.reset_index(drop=True).to_feather(path)
    else:
        frame.to_csv(path, index=False)


def write_parts(frame: pd.DataFrame, directory, suffix: str, name: str = "part-{}") -> list:
    """The frame cut at PARTS into files part-1, part-2, part-10 (natural order differs
    from the order of the names as text)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for number, (start, stop) in zip((1, 2, 10), itertools.pairwise(PARTS), strict=True):
        path = directory / (name.format(number) + suffix)
        write_frame(frame.iloc[start:stop], path)
        paths.append(path)
    return paths


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".feather"])
def test_a_glob_of_files_is_one_table(table, tmp_path, suffix):
    write_parts(table, tmp_path, suffix)
    source = open_source(str(tmp_path / f"part-*{suffix}"), target="y")
    X = np.vstack([batch.X for batch in source.batches()])
    np.testing.assert_array_equal(X, table[["a", "b", "c"]].to_numpy(float))
    whole = stablefit.fit(table[["a", "b", "c"]], table["y"])
    parts = stablefit.fit(str(tmp_path / f"part-*{suffix}"), target="y")
    digits = whole.certificate.digits
    np.testing.assert_allclose(parts.params, whole.params, rtol=10.0**-digits, atol=0)
    assert parts.n_obs == N_ROWS


def test_a_directory_reads_every_data_file_below_it_but_hidden_ones(table, tmp_path):
    write_parts(table, tmp_path / "out", ".parquet")
    (tmp_path / "out" / "_SUCCESS").write_text("")
    (tmp_path / "out" / ".part-1.parquet.crc").write_text("x")
    (tmp_path / "out" / "README.txt").write_text("not data")
    result = stablefit.fit(str(tmp_path / "out"), target="y")
    assert result.n_obs == N_ROWS


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".feather"])
def test_files_with_column_names_and_no_rows_add_no_rows(table, tmp_path, suffix):
    """Dask's ``to_csv``/``to_parquet`` (and Spark's writers) write an empty partition as a
    file with the columns and no rows: the whole table was refused for it."""
    write_parts(table, tmp_path, suffix)
    for name in ("part-0", "part-5"):  # before the first file with rows, and among them
        write_frame(table.iloc[0:0], tmp_path / (name + suffix))
    whole = stablefit.fit(table[["a", "b", "c"]], table["y"])
    parts = stablefit.fit(str(tmp_path), target="y")
    assert parts.n_obs == N_ROWS
    np.testing.assert_allclose(
        parts.params, whole.params, rtol=10.0**-whole.certificate.digits, atol=0
    )
    write_frame(table[["a", "b", "y"]].iloc[0:0], tmp_path / f"part-7{suffix}")
    with pytest.raises(StablefitInputError, match=r"part-7.* no column 'c'"):
        stablefit.fit(str(tmp_path), target="y")


def test_a_table_of_files_without_rows_is_an_error(table, tmp_path):
    for name in ("part-1.csv", "part-2.csv"):
        table.iloc[0:0].to_csv(tmp_path / name, index=False)
    with pytest.raises(StablefitInputError, match="its 2 files have column names but no rows"):
        stablefit.fit(str(tmp_path), target="y")


def test_natural_order():
    names = ["p-10.csv", "p-2.csv", "p-1.csv"]
    assert sorted(names, key=natural_key) == ["p-1.csv", "p-2.csv", "p-10.csv"]


def test_a_missing_value_is_named_by_file_and_line(table, tmp_path):
    frame = table.copy()
    frame.loc[[301, 302], "c"] = np.nan  # the second file's lines 3 and 4
    frame.loc[1100, "a"] = np.nan  # part-10's line 402
    write_parts(frame, tmp_path, ".csv")
    with pytest.raises(StablefitInputError) as error:
        stablefit.fit(str(tmp_path / "*.csv"), target="y")
    message = str(error.value)
    assert f"'c' has 2 NaN ({tmp_path / 'part-2.csv'} lines 3, 4)" in message
    assert f"'a' has 1 NaN ({tmp_path / 'part-10.csv'} line 402)" in message
    dropped = stablefit.fit(str(tmp_path / "*.csv"), target="y", missing="drop")
    assert dropped.n_obs == N_ROWS - 3


def test_text_in_a_later_file_names_file_line_and_column(table, tmp_path):
    paths = write_parts(table, tmp_path, ".csv")
    lines = paths[2].read_text().splitlines()
    cells = lines[-3].split(",")
    cells[1] = "n/a?"
    lines[-3] = ",".join(cells)
    paths[2].write_text("\n".join(lines) + "\n")
    with pytest.raises(StablefitInputError, match=r"part-10\.csv.*'b'.*'n/a\?'.*line 499"):
        stablefit.fit(str(tmp_path / "*.csv"), target="y")


def test_hive_directories_add_their_keys_as_columns(table, tmp_path):
    for year, (start, stop) in zip((2021, 2022, 2023), itertools.pairwise(PARTS), strict=True):
        folder = tmp_path / f"year={year}" / "region=north"
        folder.mkdir(parents=True)
        table.iloc[start:stop].to_parquet(folder / "part-0.parquet", index=False)
    source = open_source(str(tmp_path), target="y", drop_non_numeric=True)
    assert source.schema.feature_names == ("a", "b", "c", "year")
    assert [d.name for d in source.schema.dropped] == ["region"]
    years = np.concatenate([batch.X[:, 3] for batch in source.batches()])
    np.testing.assert_array_equal(years, np.repeat([2021, 2022, 2023], np.diff(PARTS)))
    with pytest.raises(StablefitInputError, match=r"'region'.*partition key.*'north'"):
        open_source(str(tmp_path), target="y")


def test_files_with_other_columns_are_named_with_the_first_file(table, tmp_path):
    paths = write_parts(table, tmp_path, ".parquet")
    table.iloc[:10].drop(columns="b").to_parquet(paths[1], index=False)
    with pytest.raises(StablefitInputError) as error:
        stablefit.fit(str(tmp_path / "*.parquet"), target="y")
    message = str(error.value)
    assert str(paths[1]) in message and str(paths[0]) in message and "'b'" in message
    table.iloc[:10].assign(extra=1.0).to_parquet(paths[1], index=False)
    with pytest.raises(StablefitInputError, match=r"part-2\.parquet: column 'extra' is not in"):
        stablefit.fit(str(tmp_path / "*.parquet"), target="y")


def test_mixed_kinds_and_empty_matches_are_errors(table, tmp_path):
    write_parts(table, tmp_path, ".csv")
    for other in ("part-3.parquet", "part-3.feather"):
        write_frame(table, tmp_path / other)
        with pytest.raises(StablefitInputError, match="different kinds"):
            open_source(str(tmp_path / "part-*"), target="y")
        (tmp_path / other).unlink()
    with pytest.raises(StablefitInputError, match="no file matches"):
        open_source(str(tmp_path / "nothing-*.csv"), target="y")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StablefitInputError, match="holds no CSV, Parquet or Arrow IPC files"):
        open_source(str(tmp_path / "empty"), target="y")


def test_doctor_on_many_files_finds_what_it_finds_on_one(table, tmp_path):
    write_parts(table, tmp_path, ".parquet")
    many = stablefit.diagnose(str(tmp_path / "*.parquet"), target="y")
    one = stablefit.diagnose(table, target="y")
    assert [f.code for f in many.findings] == [f.code for f in one.findings]
    assert many.training.max_stable_learning_rate == pytest.approx(
        one.training.max_stable_learning_rate, rel=1e-12
    )
