"""``stablefit fit`` and ``stablefit predict`` on real files: output, JSON, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import stablefit
from stablefit.errors import StablefitWarning
from stablefit.io.csv import SNIFF_BYTES


def flat(text: str) -> str:
    return " ".join(text.split())


def fitted(path, **options) -> stablefit.FitResult:
    return stablefit.fit(str(path), target="price", **options)


# -- fit: success -----------------------------------------------------------------------------


def test_fit_prints_a_table_per_feature_with_the_certificate(numeric_houses_csv, run_cli):
    run = run_cli("fit", numeric_houses_csv, "--target", "price")
    assert run.code == 0, run.err
    assert run.err == ""
    expected = fitted(numeric_houses_csv)
    text = flat(run.out)
    for name, coef in zip(expected.feature_names, expected.coef, strict=True):
        row = next(line for line in run.out.splitlines() if line.startswith(name))
        assert float(row.split()[1]) == pytest.approx(coef, rel=1e-5)
    assert "R² =" in text and "residual SD" in text
    assert f"certificate: {expected.certificate.digits} trusted digits" in text
    for heading in ("coef", "std err", "P>|t|", "[0.025", "0.975]"):
        assert heading in text


def test_fit_json_has_feature_names_as_keys_and_matches_the_library(
    numeric_houses_csv, tmp_path, run_cli, true_coef
):
    out = tmp_path / "fit.json"
    run = run_cli("fit", numeric_houses_csv, "--target", "price", "--json", out)
    assert run.code == 0, run.err
    report = json.loads(out.read_text())
    expected = fitted(numeric_houses_csv)
    assert list(report["features"]) == ["rooms", "area_m2"]
    for j, name in enumerate(expected.feature_names):
        feature = report["features"][name]
        assert feature["coef"] == expected.coef[j]
        assert feature["stderr"] == expected.stderr[j]
        assert feature["ci95"] == list(expected.conf_int()[j])
        assert abs(feature["coef"] - true_coef[name]) < 5 * feature["stderr"]
    assert report["intercept"]["coef"] == expected.intercept
    assert report["n_obs"] == expected.n_obs == 300
    assert report["certificate"]["digits"] == expected.certificate.digits
    assert report["dropped_columns"] == {}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_fit_json_to_stdout_is_only_json(numeric_houses_csv, run_cli):
    run = run_cli("fit", numeric_houses_csv, "--target", "price", "--json", "-")
    assert run.code == 0, run.err
    report = json.loads(run.out)
    assert set(report["features"]) == {"rooms", "area_m2"}


def test_drop_non_numeric_fits_and_reports_the_dropped_column(houses_csv, tmp_path, run_cli):
    out = tmp_path / "fit.json"
    run = run_cli("fit", houses_csv, "--target", "price", "--drop-non-numeric", "--json", out)
    assert run.code == 0, run.err
    assert "'city' was left out (not numeric: text such as" in flat(run.out)
    report = json.loads(out.read_text())
    assert list(report["features"]) == ["rooms", "area_m2"]
    assert "not numeric" in report["dropped_columns"]["city"]


def test_no_intercept(numeric_houses_csv, tmp_path, run_cli):
    out = tmp_path / "fit.json"
    run = run_cli("fit", numeric_houses_csv, "--target", "price", "--no-intercept", "--json", out)
    assert run.code == 0, run.err
    report = json.loads(out.read_text())
    assert report["intercept"] is None
    expected = fitted(numeric_houses_csv, intercept=False)
    assert [report["features"][n]["coef"] for n in expected.feature_names] == list(expected.coef)


@pytest.fixture
def holes_csv(tmp_path, houses_writer):
    """Houses with an empty cell on line 5 and 'inf' on line 9."""
    path = houses_writer(tmp_path / "holes.csv", rows=40)
    lines = path.read_text().splitlines()
    lines = [",".join(line.split(",")[i] for i in (0, 2, 3)) for line in lines]
    lines[4] = "," + lines[4].split(",", 1)[1]
    lines[8] = lines[8].rsplit(",", 1)[0] + ",inf"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_missing_values_are_an_error_naming_column_and_line(holes_csv, run_cli):
    run = run_cli("fit", holes_csv, "--target", "price")
    assert run.code == 2
    message = flat(run.err)
    assert "'rooms' has 1 NaN (line 5)" in message
    assert "'price' has 1 inf (line 9)" in message
    assert "--missing drop" in message
    assert "Traceback" not in run.err and run.out == ""


@pytest.mark.parametrize("missing", ["drop", "impute"])
def test_missing_drop_and_impute(holes_csv, tmp_path, run_cli, missing):
    out = tmp_path / "fit.json"
    run = run_cli("fit", holes_csv, "--target", "price", "--missing", missing, "--json", out)
    assert run.code == 0, run.err
    report = json.loads(out.read_text())
    assert report["n_dropped_rows"] == (2 if missing == "drop" else 1)
    assert report["n_obs"] == 40 - report["n_dropped_rows"]
    assert report["notes"]
    assert report["notes"][0].split()[0] in run.out


# -- fit: bad input ---------------------------------------------------------------------------


def bad_files(tmp_path):
    """(file, extra arguments, phrase the message must hold) per class of bad input."""
    late_text = "a,b,price\n" + "1.5,2,3\n" * (SNIFF_BYTES // 8 + 1000) + "1,oops,3\n"
    late_line = SNIFF_BYTES // 8 + 1002
    files = {
        "empty.csv": ("", "empty (0 bytes)"),
        "header.csv": ("a,price\n", "no data rows"),
        "ragged.csv": ("a,price\n1,2\n3,4,5\n", "line 3 has 3 fields"),
        "typo.csv": ("rooms,prices\n1,2\n", "Did you mean 'prices'?"),
        "labels.csv": ("a,price\n1,cheap\n", "target column 'price' is not numeric"),
        "late.csv": (late_text, f"'b' holds 'oops' at line {late_line}"),
        "dup.csv": ("a,a,price\n1,2,3\n", "duplicate column names"),
        "onlytarget.csv": ("price\n1\n2\n", "no feature columns"),
        "text.csv": ("city,price\nOslo,1\n", "--drop-non-numeric"),
        "data.xlsx": ("a,b\n", "unsupported file type"),
    }
    cases = []
    for name, (content, phrase) in files.items():
        path = tmp_path / name
        path.write_text(content)
        cases.append((path, phrase))
    cases.append((tmp_path / "absent.csv", "file not found"))
    return cases


def test_every_bad_input_exits_2_with_one_line_and_no_traceback(tmp_path, run_cli):
    for path, phrase in bad_files(tmp_path):
        before = path.read_bytes() if path.exists() else None
        run = run_cli("fit", path, "--target", "price")
        assert run.code == 2, (path.name, run)
        assert run.err.startswith("stablefit fit: error: "), path.name
        assert phrase in run.err, (path.name, run.err)
        assert run.err.count("\n") == 1 and "Traceback" not in run.err, path.name
        assert run.out == ""
        if before is not None:
            assert path.read_bytes() == before


def test_usage_errors_exit_2_on_one_line(numeric_houses_csv, run_cli):
    run = run_cli("fit", numeric_houses_csv)  # --target is required
    assert run.code == 2
    assert run.err == (
        "stablefit fit: error: the following arguments are required: --target "
        "(see 'stablefit fit --help')\n"
    )
    run = run_cli("fit", numeric_houses_csv, "--target", "price", "--missing", "guess")
    assert run.code == 2 and "invalid choice" in run.err and run.err.count("\n") == 1
    assert "usage:" not in run.err and run.out == ""


def test_unwritable_json_path_exits_2(numeric_houses_csv, tmp_path, run_cli):
    run = run_cli(
        "fit", numeric_houses_csv, "--target", "price", "--json", tmp_path / "no" / "fit.json"
    )
    assert run.code == 2 and "does not exist" in run.err


@pytest.mark.parametrize("command", ["fit", "predict", "doctor", "demo", "train"])
def test_help(command, run_cli):
    run = run_cli(command, "--help")
    assert run.code == 0 and "usage: stablefit " + command in run.out
    assert "%%" not in run.out  # argparse formats help strings, not descriptions


def test_the_installed_command_runs_as_a_real_process(numeric_houses_csv, tmp_path):
    command = [sys.executable, "-m", "stablefit.cli.main", "fit", str(numeric_houses_csv)]
    done = subprocess.run([*command, "--target", "price"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "area_m2" in done.stdout
    done = subprocess.run([*command, "--target", "cost"], capture_output=True, text=True)
    assert done.returncode == 2
    assert "no column named 'cost'" in done.stderr and "Traceback" not in done.stderr


def test_the_process_ends_only_after_all_its_output_is_written(numeric_houses_csv, run_cli):
    # The command leaves without Python's teardown: what it printed must be flushed first,
    # also when stdout is buffered (as it is in a pipe, unless PYTHONUNBUFFERED is set).
    args = ["fit", str(numeric_houses_csv), "--target", "price", "--json", "-"]
    buffered = {name: value for name, value in os.environ.items() if name != "PYTHONUNBUFFERED"}
    done = subprocess.run(
        [sys.executable, "-m", "stablefit.cli.main", *args],
        capture_output=True,
        text=True,
        env=buffered,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == json.loads(run_cli(*args).out)


def test_parquet_files_fit_like_csv(numeric_houses_csv, tmp_path, run_cli):
    parquet = tmp_path / "houses.parquet"
    pd.read_csv(numeric_houses_csv).to_parquet(parquet)
    from_csv = run_cli("fit", numeric_houses_csv, "--target", "price", "--json", "-")
    from_parquet = run_cli("fit", parquet, "--target", "price", "--json", "-")
    assert from_parquet.code == 0
    csv_report, parquet_report = json.loads(from_csv.out), json.loads(from_parquet.out)
    assert csv_report["features"] == parquet_report["features"]


# -- predict ----------------------------------------------------------------------------------


@pytest.fixture
def model_json(numeric_houses_csv, tmp_path, run_cli):
    path = tmp_path / "model.json"
    run = run_cli("fit", numeric_houses_csv, "--target", "price", "--save", path)
    assert run.code == 0, run.err
    return path


def new_houses(tmp_path, name="new.csv", *, columns=("area_m2", "city", "rooms")):
    frame = pd.DataFrame(
        {"area_m2": [50.0, 120.5, 80.0], "city": ["Oslo", "Rome", "Lima"], "rooms": [2, 4, 3]}
    )
    path = tmp_path / name
    frame[list(columns)].to_csv(path, index=False)
    return path, frame


def expected_predictions(numeric_houses_csv, frame) -> np.ndarray:
    result = fitted(numeric_houses_csv)
    return result.predict(frame[list(result.feature_names)].to_numpy(dtype=float))


def test_save_writes_a_json_model(model_json):
    saved = json.loads(model_json.read_text())
    assert "rooms" in json.dumps(saved) and "area_m2" in json.dumps(saved)


def test_predict_to_a_file(model_json, numeric_houses_csv, tmp_path, run_cli):
    data, frame = new_houses(tmp_path)  # columns in another order, and a text column
    before = data.read_bytes()
    out = tmp_path / "predictions.csv"
    run = run_cli("predict", model_json, data, "-o", out)
    assert run.code == 0, run.err
    written = pd.read_csv(out)
    assert list(written.columns) == ["prediction"]
    np.testing.assert_allclose(
        written["prediction"], expected_predictions(numeric_houses_csv, frame), rtol=1e-14
    )
    assert data.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def read_back(path) -> pd.DataFrame:
    """A predictions file as pyarrow reads its format (pandas needs extra packages for
    zstd), missing values as NaN."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    name = path.name
    if name.endswith(".parquet"):
        return pq.read_table(path).to_pandas()
    if name.endswith(".arrows"):
        return pa.ipc.open_stream(pa.OSFile(str(path))).read_all().to_pandas()
    if name.endswith(".feather"):
        return pa.ipc.open_file(pa.OSFile(str(path))).read_all().to_pandas()
    delimiter = "\t" if ".tsv" in name else ","
    return pa_csv.read_csv(path, parse_options=pa_csv.ParseOptions(delimiter=delimiter)).to_pandas()


@pytest.mark.parametrize(
    "name", ["p.parquet", "p.feather", "p.arrows", "p.tsv", "p.csv.gz", "p.tsv.zst", "p.txt"]
)
def test_predict_writes_the_format_its_output_is_named_for(model_json, tmp_path, run_cli, name):
    """Predictions to 'p.parquet' were CSV text that no Parquet reader opens."""
    data = tmp_path / "gaps.csv"
    data.write_text("rooms,area_m2\n2,50\n,60\n3,80\n")
    csv_run = run_cli("predict", model_json, data, "-o", tmp_path / "p.csv", "--intervals")
    run = run_cli("predict", model_json, data, "-o", out := tmp_path / name, "--intervals")
    assert run.code == 0 and csv_run.code == 0, run.err
    expected = pd.read_csv(tmp_path / "p.csv")
    written = read_back(out)
    assert list(written.columns) == list(expected.columns) and len(written) == 3
    assert written.iloc[1].isna().all()  # the row without a feature value: missing
    np.testing.assert_array_equal(written.to_numpy(), expected.to_numpy())


def test_predict_to_stdout(model_json, numeric_houses_csv, tmp_path, run_cli):
    data, frame = new_houses(tmp_path)
    run = run_cli("predict", model_json, data)
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert lines[0] == "prediction" and len(lines) == 4
    np.testing.assert_allclose(
        [float(v) for v in lines[1:]], expected_predictions(numeric_houses_csv, frame), rtol=1e-14
    )


def test_predict_leaves_rows_with_missing_features_empty_and_says_so(model_json, tmp_path, run_cli):
    data = tmp_path / "gaps.csv"
    data.write_text("rooms,area_m2\n2,50\n,60\n3,80\n")
    out = tmp_path / "predictions.csv"
    run = run_cli("predict", model_json, data, "-o", out)
    assert run.code == 0, run.err
    assert "1 row(s)" in run.err and "line 3" in run.err
    lines = out.read_text().splitlines()
    assert lines[0] == "prediction" and lines[2] == "" and len(lines) == 4


def test_predict_tells_an_overflowing_prediction_from_a_missing_feature(
    model_json, tmp_path, run_cli
):
    """Finite features of 1e308 were reported as 'a missing or infinite feature value', and
    the intervals printed NumPy's 'invalid value encountered in subtract'."""
    data = tmp_path / "far.csv"
    data.write_text("rooms,area_m2\n2,50\ninf,60\n1e308,1e308\n")
    out = tmp_path / "predictions.csv"
    run = run_cli("predict", model_json, data, "--intervals", "-o", out)
    assert run.code == 0, run.err
    assert "1 with a missing or infinite feature value (line 3)" in run.err
    assert "1 whose prediction or interval overflows a double" in run.err
    assert "(line 4:" in run.err
    assert "invalid value" not in run.err
    lines = out.read_text().splitlines()
    assert lines[2].strip(",") == "" and len(lines) == 4
    # Its standard error (2e307) is within float64's range, its prediction and bounds not.
    cells = lines[3].split(",")
    assert float(cells[1]) > 1e307 and all(cell == "" for cell in cells[:1] + cells[2:])


def test_predict_does_not_call_a_row_empty_for_a_gap_in_a_collinear_column(tmp_path, run_cli):
    """A NaN in a column left out as collinear (coefficient 0) leaves the prediction finite:
    it was written, and a warning said that row's prediction was left empty."""
    rng = np.random.default_rng(2)
    frame = pd.DataFrame({"a": rng.normal(size=30), "b": rng.normal(size=30)})
    frame["twice_a"] = 2 * frame["a"]
    frame["y"] = 1 + frame["a"] - frame["b"] + rng.normal(size=30)
    frame.to_csv(tmp_path / "train.csv", index=False)
    model = tmp_path / "model.json"
    assert run_cli("fit", tmp_path / "train.csv", "--target", "y", "--save", model).code == 0
    new = tmp_path / "new.csv"
    new.write_text("a,b,twice_a\n1,2,\n,1,3\n")
    out = tmp_path / "predictions.csv"
    run = run_cli("predict", model, new, "--intervals", "-o", out)
    assert run.code == 0, run.err
    said = "1 row(s) have no prediction or interval: 1 with a missing or infinite feature value"
    assert f"{said} (line 3)" in run.err
    written = pd.read_csv(out)
    library = stablefit.fit(frame, target="y")
    expected = library.get_prediction([[1.0, 2.0, 0.0]]).summary_frame()
    np.testing.assert_allclose(written.iloc[0], expected.iloc[0], rtol=1e-15)
    assert written.iloc[1].isna().all()
    with pytest.warns(StablefitWarning, match="1 of 2 rows .* \\(row 1\\)"):
        library.predict([[1.0, 2.0, np.nan], [np.nan, 1.0, 3.0]])


def test_predict_names_a_missing_model_feature(model_json, tmp_path, run_cli):
    data, _ = new_houses(tmp_path, columns=("area_m2", "city"))
    run = run_cli("predict", model_json, data, "-o", tmp_path / "p.csv")
    assert run.code == 2
    assert "missing column(s) 'rooms'" in run.err and "Traceback" not in run.err
    assert not (tmp_path / "p.csv").exists()


def test_predict_bad_model_files(tmp_path, run_cli):
    data, _ = new_houses(tmp_path)
    not_json = tmp_path / "broken.json"
    not_json.write_text("{not json")
    cases = (
        (tmp_path / "none.json", "model file not found"),
        (not_json, "not a JSON model file"),
        (tmp_path, "cannot read the model file"),
    )
    for model, phrase in cases:
        run = run_cli("predict", model, data)
        assert run.code == 2, run
        assert phrase in run.err and "Traceback" not in run.err


def test_predict_into_a_pipe_closed_early_is_not_an_error(model_json, tmp_path):
    data = tmp_path / "many.csv"
    rows = "\n".join(f"{1 + i % 5},{20 + i % 180}" for i in range(50_000))
    data.write_text("rooms,area_m2\n" + rows + "\n")
    command = [sys.executable, "-m", "stablefit.cli.main", "predict", str(model_json), str(data)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "prediction\n"
    process.stdout.close()  # like `| head -1`
    errors = process.stderr.read()
    assert process.wait() == 0, errors
    assert "Traceback" not in errors and "Broken pipe" not in errors


def test_the_row_index_pandas_writes_by_default_is_not_a_feature(tmp_path, run_cli):
    # pandas.to_csv writes the index as a first column without a name unless index=False:
    # as a feature, 0, 1, 2, ... would change the fit. It is left out, with a note.
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"a": rng.normal(size=40), "b": rng.normal(size=40)})
    frame["y"] = 2 * frame.a - frame.b + rng.normal(size=40)
    frame.to_csv(with_index := tmp_path / "with_index.csv")
    frame.to_csv(without := tmp_path / "without.csv", index=False)
    assert with_index.read_text().startswith(",a,b,y\n")
    read = stablefit.fit(with_index, target="y")
    expected = stablefit.fit(without, target="y")
    assert read.feature_names == ("a", "b")
    np.testing.assert_array_equal(read.params, expected.params)
    assert any("column 1 has no name" in note and "index=False" in note for note in read.notes)
    run = run_cli("fit", with_index, "--target", "y")
    assert run.code == 0 and "column 1 has no name" in run.out
    # Read back by pandas and written again: the old index is now 'Unnamed: 0'.
    pd.read_csv(with_index).to_csv(twice := tmp_path / "twice.csv")
    assert twice.read_text().startswith(",Unnamed: 0,a,b,y\n")
    read = stablefit.fit(twice, target="y")
    assert read.feature_names == ("a", "b")
    np.testing.assert_array_equal(read.params, expected.params)
    assert any("'Unnamed: 0'" in note and "pandas' name" in note for note in read.notes)
    assert stablefit.fit(pd.read_csv(twice), target="y").feature_names == ("a", "b")


def test_several_columns_without_a_name_are_left_out_each_with_its_reason(tmp_path, run_cli):
    """A spreadsheet export ending each line with two delimiters ('x1,x2,y,,') was refused as
    'duplicate column names ('' at positions 4, 5)'; one such column was left out."""
    rng = np.random.default_rng(2)
    frame = pd.DataFrame({"a": rng.normal(size=30), "b": rng.normal(size=30)})
    frame["y"] = frame.a - 2 * frame.b + rng.normal(size=30)
    frame.to_csv(plain := tmp_path / "plain.csv", index=False)
    lines = plain.read_text().splitlines()
    (exported := tmp_path / "exported.csv").write_text("".join(f"{line},,\n" for line in lines))
    blank = ["a,,b,y"] + [f"{a},,{b},{y}" for a, b, y in (row.split(",") for row in lines[1:])]
    (middle := tmp_path / "middle.csv").write_text("\n".join(blank) + "\n")
    expected = stablefit.fit(plain, target="y")
    for path, reasons in (
        (exported, ["column 4 has no name, as the empty column that a delimiter ending each "
                    "line makes", "column 5 has no name, as the empty column"]),
        (middle, ["column 2 has no name, its header cell being empty"]),
    ):  # fmt: skip
        run = run_cli("fit", path, "--target", "y", "--json", tmp_path / "fit.json")
        assert run.code == 0, run.err
        report = json.loads((tmp_path / "fit.json").read_text())
        assert [report["features"][name]["coef"] for name in "ab"] == list(expected.coef)
        notes = " ".join(report["notes"])
        assert all(reason in notes for reason in reasons), notes
        assert "row index" not in notes
    (twice := tmp_path / "twice.csv").write_text("a,a,y\n1,2,3\n2,1,4\n3,3,7\n")
    refused = run_cli("fit", twice, "--target", "y")
    assert refused.code == 2 and "duplicate column names ('a' at positions 1, 2)" in refused.err


def test_exclude_given_twice_leaves_out_both_and_a_quoted_name_may_hold_a_comma(tmp_path, run_cli):
    """``--exclude a --exclude b`` kept only b (argparse's last value wins), and a column
    named ``c,d`` could not be named at all."""
    rng = np.random.default_rng(5)
    frame = pd.DataFrame(rng.normal(size=(30, 4)), columns=["a", "b", "c,d", "e"])
    frame["y"] = frame.sum(axis=1) + rng.normal(size=30)
    frame.to_csv(path := tmp_path / "four.csv", index=False)
    run = run_cli("fit", path, "--target", "y", "--exclude", "a", "--exclude", 'b,"c,d"')
    assert run.code == 0, run.err
    assert run_cli("fit", path, "--target", "y", "--exclude", "a,b,a", "--json", "-").code == 0
    written = json.loads(
        run_cli("fit", path, "--target", "y", "--exclude", "a, b", "--json", "-").out
    )
    assert list(written["features"]) == ["c,d", "e"]
    written = json.loads(
        run_cli(
            "fit", path, "--target", "y", "--exclude", "a", "--exclude", 'b,"c,d"', "--json", "-"
        ).out
    )
    assert list(written["features"]) == ["e"]
    run = run_cli("doctor", path, "--target", "y", "--exclude", "e", "--exclude", "a")
    assert "2 features (b, c,d)" in " ".join(run.out.split()), run.out
    run = run_cli("fit", path, "--target", "y", "--exclude", "a", "--exclude", "b,")
    assert run.code == 2 and "--exclude 'b,': name the columns" in run.err, run.err


def test_exclude_keeps_the_spaces_of_a_name_that_has_them(tmp_path, run_cli):
    """--exclude ' x' stripped the name and left out the column 'x' instead of ' x'."""
    (path := tmp_path / "spaced.csv").write_text(
        "x, x,z,y\n1,2,0,3\n2,1,1,4\n3,3,0,6\n4,5,1,1\n6,1,0,2\n7,2,1,5\n"
    )
    # The name as given first; without its spaces only where no column has them ('z, x').
    for given, kept in (
        (" x", ["x", "z"]),
        ('" x"', ["x", "z"]),
        ("x", [" x", "z"]),
        ("z, x", ["x"]),
        ("z,x", [" x"]),
    ):
        run = run_cli("fit", path, "--target", "y", "--exclude", given, "--json", "-")
        assert run.code == 0 and list(json.loads(run.out)["features"]) == kept, (given, run)


def test_excluding_the_target_is_said_not_ignored(tmp_path, run_cli):
    """--exclude naming the target was accepted without a word."""
    for command in ("fit", "doctor"):
        # A file each: Python shows a warning once per message in a process.
        path = tmp_path / f"{command}.csv"
        path.write_text("x,z,y\n1,0,2\n2,1,1\n3,0,3\n4,1,5\n6,0,1\n")
        run = run_cli(command, path, "--target", "y", "--exclude", "z,y")
        assert run.code == 0, run
        assert "'y' is the target, which is never a feature: excluding it changes nothing" in (
            " ".join(run.err.split())
        )


def test_a_delimiter_ending_every_line_is_not_called_a_row_index(tmp_path):
    """The empty last column of 'x,y,' lines was explained as pandas' row index."""
    (path := tmp_path / "trailing.csv").write_text("x,y,\n1,2,\n2,3,\n3,5,\n4,4,\n")
    result = stablefit.fit(path, target="y")
    assert result.feature_names == ("x",)
    (note,) = [note for note in result.notes if "Column ''" in note]
    assert "a delimiter ending each line" in note and "row index" not in note


def test_the_row_index_pandas_writes_to_parquet_is_not_a_feature(tmp_path, run_cli):
    """A sampled frame's to_parquet holds its index as '__index_level_0__', which was
    fitted as a feature without a word."""
    rng = np.random.default_rng(9)
    frame = pd.DataFrame({"a": rng.normal(size=40), "b": rng.normal(size=40)})
    frame["y"] = frame.a - 2 * frame.b + rng.normal(size=40)
    frame.sample(frac=1, random_state=1).to_parquet(path := tmp_path / "sampled.parquet")
    frame.sample(frac=1, random_state=1).to_parquet(plain := tmp_path / "plain.parquet",
                                                    index=False)  # fmt: skip
    read, expected = stablefit.fit(path, target="y"), stablefit.fit(plain, target="y")
    assert read.feature_names == ("a", "b")
    np.testing.assert_array_equal(read.params, expected.params)
    run = run_cli("fit", path, "--target", "y")
    assert run.code == 0 and "'__index_level_0__' was left out" in run.out
    assert "the row index that pandas.to_parquet writes" in " ".join(run.out.split())


def test_a_column_without_any_value_is_named_with_the_way_to_leave_it_out(tmp_path, run_cli):
    rng = np.random.default_rng(2)
    frame = pd.DataFrame({"a": rng.normal(size=20), "empty": np.nan})
    frame["y"] = 3 * frame.a + rng.normal(size=20)
    frame.to_csv(path := tmp_path / "empty_column.csv", index=False)
    for missing in ("error", "drop"):
        run = run_cli("fit", path, "--target", "y", "--missing", missing)
        assert run.code == 2 and "'empty' has no finite value at all" in run.err, run.err
        assert "--exclude empty" in run.err and run.err.count("\n") == 1
    run = run_cli("fit", path, "--target", "y", "--exclude", "empty", "--json", "-")
    assert run.code == 0, run.err
    expected = stablefit.fit(frame[["a"]], frame.y)
    written = json.loads(run.out)
    assert list(written["features"]) == ["a"]
    got = [written["intercept"]["coef"], written["features"]["a"]["coef"]]
    np.testing.assert_allclose(got, expected.params, rtol=1e-15)
    run = run_cli("doctor", path, "--target", "y", "--exclude", "empty")
    assert run.code in (0, 1) and "1 feature (a)" in run.out, run.err
    run = run_cli("fit", path, "--target", "y", "--exclude", "nope")
    assert run.code == 2 and "missing column(s) 'nope'" in run.err
