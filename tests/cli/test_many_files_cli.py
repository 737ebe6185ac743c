"""fit, doctor and predict on a glob of files, with progress bars."""

from __future__ import annotations

import json

import numpy as np


def split_csv(path, parts: int) -> str:
    """The CSV file cut into ``parts`` files with the same header; their glob."""
    header, *rows = path.read_text().splitlines()
    folder = path.parent / "parts"
    folder.mkdir()
    for index, chunk in enumerate(np.array_split(np.array(rows), parts)):
        (folder / f"houses-{index}.csv").write_text("\n".join([header, *chunk]) + "\n")
    return str(folder / "houses-*.csv")


def test_fit_of_a_glob_is_the_fit_of_the_whole_file(numeric_houses_csv, run_cli):
    pattern = split_csv(numeric_houses_csv, 3)
    whole = json.loads(run_cli("fit", numeric_houses_csv, "--target", "price", "--json", "-").out)
    parts = run_cli("fit", pattern, "--target", "price", "--json", "-", "--progress")
    assert parts.code == 0
    for name, entry in whole["features"].items():
        assert json.loads(parts.out)["features"][name]["coef"] == entry["coef"]
    # The first pass reads the files (the later ones come from the cache).
    assert "pass 1" in parts.err and "300/300 rows" in parts.err


def test_predict_writes_the_rows_of_every_file_in_order(numeric_houses_csv, tmp_path, run_cli):
    pattern = split_csv(numeric_houses_csv, 4)
    model = tmp_path / "model.json"
    assert run_cli("fit", numeric_houses_csv, "--target", "price", "--save", model).code == 0
    whole = run_cli("predict", model, numeric_houses_csv)
    parts = run_cli("predict", model, pattern)
    assert parts.code == 0 and parts.out == whole.out
    assert len(parts.out.splitlines()) == 301


def test_doctor_names_the_file_and_line_of_a_missing_value(numeric_houses_csv, run_cli):
    lines = numeric_houses_csv.read_text().splitlines()
    lines[200] = lines[200].split(",")[0] + ",," + lines[200].split(",")[2]
    numeric_houses_csv.write_text("\n".join(lines) + "\n")
    pattern = split_csv(numeric_houses_csv, 3)  # 100 rows each: line 200 is file 1's line 101
    done = run_cli("doctor", pattern, "--target", "price", "--json", "-")
    assert done.code == 1
    missing = next(f for f in json.loads(done.out)["findings"] if f["code"] == "SF101")
    assert "houses-1.csv line 101" in json.dumps(missing)
