"""One top-level promise: every file a user can meet ends in one line naming the file, the
place and the fix, with exit code 2; a bug says it is one and where its traceback went.
(The cases of issue 9, "What was found" 3 and 6, each reproduced.)"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stablefit.cli.main import EXIT_BUG

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def zstd(data: bytes) -> bytes:
    return pa.compress(data, codec="zstd", asbytes=True)


PLAIN = b"x,z,y\n1,2,3.5\n2,1,4\n3,5,9.25\n4,4,7\n5,0,6.5\n"


def one_line(run, *phrases: str) -> None:
    assert run.code == 2, (run.code, run.err)
    assert len(run.err.splitlines()) == 1, run.err
    assert "Traceback" not in run.err and "Exception ignored" not in run.err
    assert run.err.isprintable() or run.err[:-1].isprintable(), run.err  # no raw bytes
    for phrase in phrases:
        assert phrase in run.err, run.err


def damaged_parquet(path: Path) -> Path:
    rng = np.random.default_rng(0)
    pq.write_table(pa.table({"x": rng.normal(size=5000), "y": rng.normal(size=5000)}), path)
    data = bytearray(path.read_bytes())
    column = pq.ParquetFile(path).metadata.row_group(0).column(0)
    start = column.data_page_offset
    data[start : start + 40] = bytes(40)  # the page header: garbage
    path.write_bytes(bytes(data))
    return path


FILES = {
    "latin1.csv": ("caf\xe9,y\n1,2\n3,4\n5,7\n".encode("latin-1"), "line 1 holds the byte 0xe9"),
    "random.csv": (np.random.default_rng(1).bytes(5000), "NUL byte"),
    "image.csv": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4, "NUL byte"),
    "cut.csv.gz": (gzip.compress(PLAIN + b"1,2,%r\n" % np.pi * 9)[:-9], "not a complete gzip"),
    "plain.csv.gz": (PLAIN, "not a complete gzip file"),
    "cut.csv.zst": (zstd(PLAIN + b"1,2,%r\n" % np.pi * 9)[:-9], "not a complete zstd file"),
    "plain.csv.zst": (PLAIN, "not a complete zstd file"),
    "zstd.csv": (zstd(PLAIN), "zstd-compressed, not CSV text; give it a name ending in .csv.zst"),
}


@pytest.mark.parametrize("command", ["fit", "doctor"])
@pytest.mark.parametrize("name", list(FILES))
def test_bad_bytes_and_compression_are_one_line(name, command, tmp_path, run_cli):
    data, phrase = FILES[name]
    path = tmp_path / name
    path.write_bytes(data)
    one_line(run_cli(command, path, "--target", "y"), name, phrase)
    assert path.read_bytes() == data


def test_parquet_with_a_category_column_and_damaged_pages(tmp_path, run_cli):
    frame = pd.DataFrame({"x": [1.0, 2.0, 4.0, 3.0], "c": pd.Categorical(list("uvuv")), "y": 1.0})
    frame["y"] = [2.0, 4.5, 8.0, 6.5]
    path = tmp_path / "category.parquet"
    frame.to_parquet(path)
    one_line(run_cli("fit", path, "--target", "y"), "'c': text such as 'u'")
    assert run_cli("fit", path, "--target", "y", "--drop-non-numeric").code == 0
    damaged = damaged_parquet(tmp_path / "damaged.parquet")
    for command in ("fit", "doctor"):
        one_line(run_cli(command, damaged, "--target", "y"), "damaged.parquet")


def test_a_line_longer_than_a_parser_block_is_read(tmp_path, run_cli):
    path = tmp_path / "long.csv"
    path.write_text("x,t,y\n" + "1," + "a" * (3 << 20) + ",2\n2,b,3\n3,c,5\n")
    run = run_cli("fit", path, "--target", "y", "--drop-non-numeric")
    assert run.code == 0, run.err


def test_quoted_line_breaks_past_the_first_chunk_are_one_line(tmp_path, run_cli):
    path = tmp_path / "quoted.csv"
    rows = [f'{i},"a\nb",{2 * i}' if i % 50 == 49 else f"{i},z,{2 * i}" for i in range(150_000)]
    path.write_text("x,t,y\n" + "\n".join(rows) + "\n")
    one_line(
        run_cli("fit", path, "--target", "y", "--drop-non-numeric"),
        "quoted value that runs over a line break",
    )


@pytest.mark.parametrize(
    ("document", "phrase"),
    [
        (b'{"format":"stablefit.linear-model","version":1,"intercept":0,'
         b'"coefficients":{"x":1' + b"0" * 400 + b"}}", "finite numbers"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"format":"stablefit.linear-model","version":1,"intercept":0,'
         b'"coefficients":{"x":true}}', "finite numbers, not True"),
        (bytes(range(256)), "not a JSON model file"),
    ],
)  # fmt: skip
def test_hostile_model_files_are_one_line(document, phrase, tmp_path, run_cli):
    model = tmp_path / "model.json"
    model.write_bytes(document)
    data = tmp_path / "data.csv"
    data.write_bytes(PLAIN)
    one_line(run_cli("predict", model, data), phrase)


def test_a_boolean_column_with_a_number_names_the_number(tmp_path, run_cli):
    path = tmp_path / "flags.csv"
    lines = [f"{'true' if i % 2 else 'false'},{i},{2 * i + 1}" for i in range(40_000)]
    path.write_text("b,x,y\n" + "\n".join(lines) + "\n2,5,11\n")
    one_line(run_cli("fit", path, "--target", "y"), "'2' at line 40002")


def test_an_empty_column_with_missing_drop_is_named(tmp_path, run_cli):
    path = tmp_path / "empty.csv"
    path.write_text("a,e,y\n1,,2\n2,,3\n3,,5\n4,,4\n")
    one_line(run_cli("fit", path, "--target", "y", "--missing", "drop"), "'e' has no finite value")


@pytest.mark.parametrize("missing", ["error", "drop", "impute"])
def test_a_target_without_values_is_not_sent_to_missing_drop(missing, tmp_path, run_cli):
    """No choice of --missing helps a target with no value (nulls in a Parquet file): the
    error says so instead of suggesting --missing drop, which dropped every row."""
    path = tmp_path / "empty_target.parquet"
    pq.write_table(pa.table({"x": [1.0, 2.0, 3.0, 4.0], "y": pa.nulls(4, pa.float64())}), path)
    one_line(
        run_cli("fit", path, "--target", "y", "--missing", missing),
        "the target 'y' has no finite value (4 NaN (rows 0, 1, 2, 3))",
        "--target COL",
    )


def test_wide_files_and_long_forecasts_are_refused_up_front(tmp_path, run_cli):
    path = tmp_path / "wide.csv"
    names = [f"x{j}" for j in range(2_500)]
    path.write_text(",".join([*names, "y"]) + "\n" + ",".join(["1"] * 2_501) + "\n")
    one_line(run_cli("fit", path, "--target", "y"), "2,500 feature columns", "at most 2,000")
    data = tmp_path / "data.csv"
    data.write_bytes(PLAIN)
    one_line(run_cli("doctor", data, "--target", "y", "--epochs", "20000000"), "100,000")


def test_a_bug_is_said_to_be_one_with_its_traceback_in_a_file(tmp_path, run_cli, monkeypatch):
    import stablefit.cli.fit as fit_command

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(fit_command, "open_source", broken)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    data = tmp_path / "data.csv"
    data.write_bytes(PLAIN)
    run = run_cli("fit", data, "--target", "y")
    assert run.code == EXIT_BUG and len(run.err.splitlines()) == 1
    assert "this is a bug" in run.err and "Traceback" not in run.err
    written = Path(run.err.split("The traceback is in ")[1].split(";")[0])
    assert "ZeroDivisionError: a bug" in written.read_text()


@pytest.mark.skipif(not IS_ROOT, reason="root gives up its privileges to meet the error")
def test_permission_denied_is_one_line(tmp_path, run_cli):
    data = tmp_path / "secret.csv"
    data.write_bytes(PLAIN)
    data.chmod(0o600)
    for command in ("fit", "doctor"):
        assert run_cli(command, data, "--target", "y").code == 0  # everything imported
        os.seteuid(65534)  # nobody, until the finally
        try:
            run = run_cli(command, data, "--target", "y")
        finally:
            os.seteuid(0)
        one_line(run, "Permission denied", "secret.csv")
