"""Arrow IPC files (Feather): read as Parquet and CSV files are, in both of Arrow's layouts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather
import pytest

import stablefit
from stablefit.cli.main import main
from stablefit.errors import StablefitInputError
from stablefit.io import open_source

N_ROWS = 500


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(5)
    data = pd.DataFrame(
        {"a": rng.normal(size=N_ROWS) * 1e4 + 3e5, "b": rng.integers(-9, 9, N_ROWS)}
    )
    data["y"] = 2 - 1e-3 * data.a + 0.5 * data.b + rng.normal(size=N_ROWS)
    data["w"] = rng.uniform(0.5, 2.0, N_ROWS)
    data["firm"] = rng.choice([f"firm {i}" for i in range(25)], N_ROWS)
    return data


def write_stream(table: pa.Table, path, rows_per_batch: int) -> None:
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=rows_per_batch)


@pytest.fixture(scope="module")
def files(frame, tmp_path_factory) -> dict[str, object]:
    """The same table as pandas writes it (Feather), compressed in small batches, and as
    an IPC stream."""
    folder = tmp_path_factory.mktemp("arrow")
    paths = {
        "to_feather": folder / "data.feather",
        "zstd, 64-row batches": folder / "batches.arrow",
        "stream": folder / "data.arrows",
    }
    frame.to_feather(paths["to_feather"])
    feather.write_feather(frame, paths["zstd, 64-row batches"], compression="zstd", chunksize=64)
    write_stream(pa.Table.from_pandas(frame, preserve_index=False), paths["stream"], 37)
    return paths


@pytest.mark.parametrize("kind", ["to_feather", "zstd, 64-row batches", "stream"])
def test_a_feather_file_reads_the_values_pandas_wrote(frame, files, kind):
    source = open_source(files[kind], target="y", exclude=["w", "firm"], batch_rows=100)
    batches = list(source.batches())
    assert max(batch.n_rows for batch in batches) <= 100
    np.testing.assert_array_equal(
        np.vstack([batch.X for batch in batches]), frame[["a", "b"]].to_numpy(float)
    )
    np.testing.assert_array_equal(np.concatenate([batch.y for batch in batches]), frame.y)
    assert [batch.first_row for batch in batches] == list(
        np.cumsum([0] + [batch.n_rows for batch in batches[:-1]])
    )


@pytest.mark.parametrize("kind", ["to_feather", "stream"])
def test_weights_and_clusters_come_from_the_file(frame, files, kind):
    fitted = stablefit.fit(files[kind], target="y", weights="w", cov_type="cluster", groups="firm")
    expected = stablefit.fit(
        frame[["a", "b"]], frame.y, weights=frame.w, cov_type="cluster", groups=frame.firm
    )
    np.testing.assert_array_equal(fitted.params, expected.params)
    # The clusters' sums are taken batch by batch: the stream's 37-row batches add them in
    # another order than one 500-row array.
    np.testing.assert_allclose(fitted.bse, expected.bse, rtol=1e-12, atol=0)


def test_a_missing_value_is_named_by_its_row(frame, tmp_path):
    broken = frame[["a", "b", "y"]].copy()
    broken.loc[[7, 420], "b"] = np.nan
    broken.to_feather(path := tmp_path / "missing.feather")
    with pytest.raises(StablefitInputError, match=r"'b' has 2 NaN \(rows 7, 420\)"):
        stablefit.fit(path, target="y")


def test_the_command_line_fits_a_feather_file(frame, files, capsys):
    assert main(["fit", str(files["to_feather"]), "--target", "y", "--exclude", "w,firm"]) == 0
    assert "n = 500" in capsys.readouterr().out


def damaged(path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def feather_version_1(frame: pd.DataFrame, path) -> None:
    with pytest.warns(DeprecationWarning):
        feather.write_feather(frame[["a", "y"]], path, version=1)


CASES = [
        ("empty.feather", lambda frame, path: path.write_bytes(b""), r"empty \(0 bytes\)"),
        ("none.feather", lambda frame, path: frame.iloc[:0].to_feather(path), "no rows"),
        ("cut.feather", lambda frame, path: (frame.to_feather(path), damaged(path)),
         "not a readable Arrow IPC .* damaged or cut short: write it again"),
        ("old.feather", feather_version_1,
         "Feather version 1 file, not Arrow IPC; write it again as version 2"),
        ("text.feather", lambda frame, path: frame.to_csv(path, index=False),
         r"text \(a CSV file\?\), not Arrow IPC; give it a name ending in .csv"),
        ("parquet.arrow", lambda frame, path: frame.to_parquet(path),
         "a Parquet file, not Arrow IPC; give it a name ending in .parquet"),
        ("feather.csv", lambda frame, path: frame.to_feather(path),
         "an Arrow IPC .Feather. file, not CSV text; give it a name ending in .feather"),
        ("feather.parquet", lambda frame, path: frame.to_feather(path),
         "an Arrow IPC .Feather. file, not Parquet; give it a name ending in .feather"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "write", "message"), CASES, ids=[case[0] for case in CASES])
def test_a_file_that_is_not_what_its_name_says_is_named(frame, tmp_path, name, write, message):
    write(frame, path := tmp_path / name)
    with pytest.raises(StablefitInputError, match=message):
        open_source(path, target="y", exclude=["w", "firm"])
    assert main(["fit", str(path), "--target", "y"]) == 2
