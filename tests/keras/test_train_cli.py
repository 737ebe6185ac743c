"""``stablefit train`` end to end: real files, real Keras, the exact fit beside it."""

from __future__ import annotations

import re
from importlib import resources

import numpy as np
import pytest

from stablefit.cli.main import main

pytestmark = pytest.mark.keras


def bundled(name: str) -> str:
    return str(resources.files("stablefit") / "data" / name)


def excess_percent(output: str) -> float:
    match = re.search(r"excess loss over the optimum: ([0-9.e+-]+)% of its initial", output)
    assert match, output
    return float(match.group(1))


def test_auto_on_example_1_reaches_the_optimum(capsys) -> None:
    code = main(["train", bundled("seed_example1.csv"), "--target", "y", "--auto"])
    output = capsys.readouterr().out
    assert code == 0, output
    assert "Normalization layer" in output
    # "Converges" as stablefit defines it: the excess loss over the optimum (0 here,
    # y = 10 x1 exactly) falls to at most 1% of its value before training.
    assert excess_percent(output) <= 1.0
    assert "NanGuard: no non-finite" in output
    assert "x2 = 1e+06·x1" in output  # the exact fit reports the collinearity


def test_sgd_on_example_1_is_stopped_by_the_guard_with_the_reason(capsys) -> None:
    args = ["train", bundled("seed_example1.csv"), "--target", "y", "--optimizer", "sgd",
            "--learning-rate", "0.01", "--epochs", "30"]  # fmt: skip
    code = main(args)
    output = capsys.readouterr().out
    assert code == 1
    assert "NanGuard stopped training" in output
    words = " ".join(output.split())  # the console wraps long lines
    assert "at epoch 2/30, batch 1/1: cause learning rate" in words
    assert "stable only for learning rates below 2.14e-13" in words
    assert "SF201" in output  # the diagnosis says why, in the file's column names
    assert "dominated by x2" in output and "x2 = 1e6·x1" in output
    # The model holds the last good weights: finite coefficients are printed.
    trained = re.search(r"│ x1\s+│\s+(\S+)", output)
    assert trained and np.isfinite(float(trained.group(1)))
    # The best weights seen are the initial ones: the copy after the first step was kept
    # with the loss measured before that step (1.36e12) while its own was 1.2e34, and the
    # guard restored it. And the message's line breaks were printed as '\n'.
    loss = re.search(r"│ loss \(MSE\)\s+│\s+(\S+)", output)
    before = re.search(r"\(([0-9.e+]+) before training\)", words)
    assert loss and before and float(loss.group(1)) <= float(before.group(1)), output
    assert "restored the weights from the start of epoch 1" in words
    assert "\\n" not in output


def test_without_the_guard_sgd_on_example_1_ends_in_nan(capsys) -> None:
    args = ["train", bundled("seed_example1.csv"), "--target", "y", "--optimizer", "sgd",
            "--learning-rate", "0.01", "--epochs", "10", "--no-guard"]  # fmt: skip
    code = main(args)
    output = capsys.readouterr().out
    assert code == 1
    assert "NanGuard: off" in output
    assert "non-finite weights or loss" in output
    assert re.search(r"│ loss \(MSE\)\s+│\s+(NaN|inf)", output)


def test_rows_with_nan_are_refused_naming_the_line(tmp_path, capsys) -> None:
    path = tmp_path / "holes.csv"
    path.write_text("a,b,y\n1,2,3\n4,,6\n7,8,9\n")
    code = main(["train", str(path), "--target", "y"])
    error = capsys.readouterr().err
    assert code == 2
    assert "line 3 holds NaN" in error
    # Not "Keras would train on them": with the guard on, Keras would leave them out.
    assert "exact fit of the same rows" in error and "NanGuard leaves them out" in error


def test_values_beyond_float32_are_refused_naming_column_and_line(tmp_path, capsys) -> None:
    """Keras trains in float32, where 1e100 is inf (the fuzz suite found a bug report)."""
    path = tmp_path / "huge.csv"
    path.write_text("a,b,y\n1,2,3\n4,1e100,6\n7,8,9\n10,11,-1e40\n")
    code = main(["train", str(path), "--target", "y"])
    error = capsys.readouterr().err
    assert code == 2, error
    assert "column(s) 'b', 'y' hold values beyond float32's range" in error
    assert "lines 3, 5" in error and "Rescale" in error


@pytest.mark.parametrize(
    ("option", "said"),
    [
        (["--seed", "-5"], "--seed -5: give a seed from 0 to 2**32 - 1"),  # was a crash
        (["--learning-rate", "inf"], "--learning-rate inf: give a positive learning rate"),
    ],
)
def test_a_bad_option_is_a_one_line_error_before_training(tmp_path, capsys, option, said):
    path = tmp_path / "ok.csv"
    path.write_text("a,y\n1,2\n2,4\n3,6\n")
    code = main(["train", str(path), "--target", "y", "--epochs", "1", *option])
    error = capsys.readouterr().err
    assert code == 2 and error.count("\n") == 1 and said in error


def test_a_directory_is_named_as_one(tmp_path, capsys) -> None:
    code = main(["train", str(tmp_path), "--target", "y"])
    assert code == 2
    assert (
        f"{tmp_path}: a directory; give one CSV, Parquet or Feather file" in capsys.readouterr().err
    )


def test_a_missing_file_is_a_one_line_error(tmp_path, capsys) -> None:
    code = main(["train", str(tmp_path / "nope.csv"), "--target", "y"])
    assert code == 2
    assert "no such file" in capsys.readouterr().err


def test_text_columns_are_an_error_unless_dropped(tmp_path, capsys) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=64)
    lines = ["x,city,y", *(f"{v},{'ab'[i % 2]},{2 * v + 1}" for i, v in enumerate(x))]
    path = tmp_path / "data.csv"
    path.write_text("\n".join(lines) + "\n")
    assert main(["train", str(path), "--target", "y", "--epochs", "2"]) == 2
    assert "--drop-non-numeric" in capsys.readouterr().err
    code = main(["train", str(path), "--target", "y", "--epochs", "2", "--drop-non-numeric"])
    output = capsys.readouterr().out
    assert code == 0, output
    assert "│ x " in output and "│ city" not in output  # the coefficient table's rows
    code = main(["train", str(path), "--target", "y", "--epochs", "2", "--exclude", "city"])
    output = capsys.readouterr().out
    assert code == 0, output
    assert "│ x " in output and "│ city" not in output


def test_a_divergence_no_learning_rate_fixes_prints_no_nan_bound(tmp_path, capsys) -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal(64)
    path = tmp_path / "huge_target.csv"
    path.write_text("a,y\n" + "".join(f"{v!r},{v * 1e30!r}\n" for v in a.tolist()))
    code = main(["train", str(path), "--target", "y", "--epochs", "1"])
    output = " ".join(capsys.readouterr().out.split())  # as one line, whatever the width
    # The forecast's first line said "stable for lr < NaN" (Adam's divergence here is the
    # squares of targets near 1e30 overflowing float32, which no learning rate fixes).
    assert code == 1 and "forecast for Adam" in output
    assert "diverges (non-finite loss at epoch 1)" in output
    assert "lr < NaN" not in output
