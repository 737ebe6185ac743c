"""``stablefit doctor`` and ``stablefit demo`` on real files: output, JSON and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from stablefit.cli.doctor import DEMO_CASES, bundled_csv, load_example, scale, train_with_keras
from stablefit.cli.main import main
from stablefit.diagnose import diagnose


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture
def example1() -> str:
    return str(bundled_csv("seed_example1.csv"))


@pytest.fixture
def well_scaled_csv(tmp_path) -> str:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, 2))
    y = X @ np.array([1.5, -0.5]) + 0.1 * rng.normal(size=200)
    path = tmp_path / "scaled.csv"
    rows = "\n".join(f"{a:.6f},{b:.6f},{t:.6f}" for (a, b), t in zip(X, y, strict=True))
    path.write_text("a,b,target\n" + rows + "\n")
    return str(path)


def test_bundled_examples_are_the_seeds_data():
    for case in DEMO_CASES:
        X, y, names = load_example(case)
        assert names == ("x1", "x2")
        assert np.isfinite(X).all() and np.isfinite(y).all()
    table = np.loadtxt(bundled_csv("seed_example1.csv"), delimiter=",", skiprows=1)
    np.testing.assert_array_equal(table, [[1, 1e6, 10], [2, 2e6, 20], [3, 3e6, 30]])
    table = np.loadtxt(bundled_csv("seed_example3.csv"), delimiter=",", skiprows=1)
    np.testing.assert_array_equal(table[:, 1], [10, 20, 30, 1e6])


def test_scalers_match_scikit_learn():
    preprocessing = pytest.importorskip("sklearn.preprocessing")
    X, _, _ = load_example(DEMO_CASES[-1])  # unscaled Example 3
    np.testing.assert_allclose(
        scale(X, "standard"), preprocessing.StandardScaler().fit_transform(X), rtol=1e-12
    )
    np.testing.assert_allclose(
        scale(X, "robust"), preprocessing.RobustScaler().fit_transform(X), rtol=1e-12
    )


def test_doctor_example1_sgd_exits_1_and_writes_json(example1, tmp_path, capsys):
    out = tmp_path / "diagnosis.json"
    code = main(["doctor", example1, "--target", "y", "--optimizer", "sgd", "--json", str(out)])
    assert code == 1
    text = flat(capsys.readouterr().out)
    assert "SGD lr 0.01 diverges: loss inf at epoch 3, NaN by epoch 6" in text
    assert "stable only for lr < 2.14e-13" in text
    assert "model.fit(" in text  # the fix as code
    data = json.loads(out.read_text())
    assert data["schema_version"] == 1
    assert data["diverges"] is True
    assert data["findings"][0]["code"] == "SF201"
    assert data["training"]["dominant_feature"] == "x2"


def test_doctor_example1_default_adam_exits_0(example1, capsys):
    # Adam at lr 0.001 never reaches NaN here: it stalls (a warning, not an error).
    assert main(["doctor", example1, "--target", "y"]) == 0
    text = flat(capsys.readouterr().out)
    assert "Adam lr 0.001 stalls" in text
    assert "beside it: ✗ SGD lr 0.01 diverges" in text


def test_doctor_well_scaled_data_exits_0(well_scaled_csv, capsys):
    assert main(["doctor", well_scaled_csv, "--target", "target", "--optimizer", "sgd"]) == 0
    assert "converges" in capsys.readouterr().out


def test_doctor_json_to_stdout_only(example1, capsys):
    assert main(["doctor", example1, "--target", "y", "--optimizer", "sgd", "--json", "-"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["training"]["first_nonfinite_epoch"] == 3


def test_doctor_momentum_is_forecast(example1, capsys):
    args = ["doctor", example1, "--target", "y", "--optimizer", "sgd", "--momentum", "0.9"]
    assert main([*args, "--learning-rate", "1e-14", "--json", "-"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["training"]["momentum"] == 0.9
    assert data["training"]["outcome"] != "diverges"


def test_doctor_missing_file_exits_2(tmp_path, capsys):
    assert main(["doctor", str(tmp_path / "nope.csv"), "--target", "y"]) == 2
    assert "nope.csv" in capsys.readouterr().err


def test_doctor_missing_target_exits_2(example1, capsys):
    assert main(["doctor", example1, "--target", "price"]) == 2
    assert "price" in capsys.readouterr().err


def test_doctor_bad_json_directory_exits_2(example1, tmp_path, capsys):
    target = tmp_path / "missing" / "d.json"
    assert main(["doctor", example1, "--target", "y", "--json", str(target)]) == 2
    assert not target.exists()
    captured = capsys.readouterr()
    assert captured.out == ""  # no report before the failure
    assert "missing" in captured.err


def test_doctor_nan_file_exits_1(tmp_path, capsys):
    path = tmp_path / "holes.csv"
    path.write_text("a,y\n1,2\n2,\n3,6\n4,8\n")
    assert main(["doctor", str(path), "--target", "y", "--optimizer", "adam"]) == 1
    text = flat(capsys.readouterr().out)
    assert "SF102" in text and "line 3" in text


def test_doctor_values_whose_squares_overflow_print_no_nan_optimum(tmp_path, capsys):
    """A value of 1e308 leaves no least-squares optimum to compute: the forecast printed
    'optimum NaN' (its JSON says null with the reason)."""
    path = tmp_path / "huge.csv"
    path.write_text("a,b,y\n1,2,3\n2,1,4\n1e308,3,9\n4,4,7\n5,0,6\n")
    assert main(["doctor", str(path), "--target", "y"]) == 1
    text = flat(capsys.readouterr().out)
    assert "initial loss inf, optimum not computable" in text and "NaN," not in text
    assert "optimum NaN" not in text


def test_doctor_as_a_command_prints_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "stablefit.cli.main", "doctor", str(tmp_path / "x.csv")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "x.csv" in result.stderr


def test_demo_without_keras(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--no-keras"]) == 0
    text = flat(capsys.readouterr().out)
    report = tmp_path / "stablefit-demo.html"
    assert f"HTML report: {report}" in text
    assert report.read_text().startswith("<!DOCTYPE html>")
    assert text.count("inf at epoch 3, NaN at 6") == 2  # Example 1 and 3 with plain SGD
    assert "stalls: loss" in text
    assert "x2 = 1e6·x1" in text and "y = 10·x1" in text
    assert "Real Keras runs skipped (--no-keras)" in text


@pytest.mark.keras
def test_keras_agrees_with_the_forecast_on_example1_sgd():
    X, y, _ = load_example(DEMO_CASES[1])
    outcome = train_with_keras(X, y, optimizer="sgd", learning_rate=None)
    assert (outcome.first_nonfinite_epoch, outcome.first_nan_epoch) == (3, 6)
    X, y, _ = load_example(DEMO_CASES[2])  # StandardScaler + Adam(0.01): no NaN, stalls
    outcome = train_with_keras(X, y, optimizer="adam", learning_rate=0.01)
    assert outcome.first_nonfinite_epoch is None
    assert 100 < outcome.final_loss < 1000


def test_doctor_without_target_runs_the_data_checks(example1, capsys):
    assert main(["doctor", example1]) == 0
    text = flat(capsys.readouterr().out)
    assert "SF106" in text and "No training forecast" in text


@pytest.mark.parametrize(
    ("index", "low", "high"),
    [(2, 300.0, 500.0), (3, 30.0, 80.0)],  # Example 2 stalls near 400, Example 3 near 50
)
def test_demo_forecasts_for_the_scaled_examples_stall(index, low, high):
    case = DEMO_CASES[index]
    X, y, names = load_example(case)
    d = diagnose(
        X, y, feature_names=names, optimizer=case.optimizer, learning_rate=case.learning_rate
    )
    assert d.training.outcome == "stalls"
    assert d.training.first_nonfinite_epoch is None
    assert low < d.training.predicted_final_loss < high


def test_doctor_leaves_out_text_columns_when_asked_and_says_so(houses_csv, run_cli):
    refused = run_cli("doctor", houses_csv, "--target", "price")
    assert refused.code == 2 and "--drop-non-numeric" in refused.err
    run = run_cli("doctor", houses_csv, "--target", "price", "--drop-non-numeric")
    assert run.code in (0, 1), run.err
    assert "2 features (rooms, area_m2)" in flat(run.out)
    assert "Left out: 'city' (not numeric: text such as" in flat(run.out)
    found = diagnose(houses_csv, target="price", drop_non_numeric=True)
    assert found.facts.feature_names == ("rooms", "area_m2")
    assert [name for name, _ in found.facts.left_out] == ["city"]
