"""stablefit.diagnose end to end: the seed's facts, NaN handling, JSON, the text report."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from rich.console import Console

from stablefit.diagnose import diagnose
from stablefit.diagnose.findings import SCHEMA_VERSION, severity_rank
from stablefit.errors import StablefitInputError
from stablefit.report.diagnosis import renderables

X1 = np.array([[1.0, 1e6], [2.0, 2e6], [3.0, 3e6]])
Y1 = np.array([10.0, 20.0, 30.0])
NAMES = ["x1", "x2"]


def well_scaled(n: int = 256, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    return X, X @ np.array([0.5, -1.0, 2.0]) + 0.1 * rng.normal(size=n)


def test_seed_example1_with_sgd_diverges_at_epoch_3_and_says_why():
    d = diagnose(X1, Y1, feature_names=NAMES, optimizer="sgd")
    t = d.training
    assert (t.optimizer, t.learning_rate) == ("sgd", 0.01)
    assert t.outcome == "diverges"
    assert t.first_nonfinite_epoch == 3
    assert t.first_nan_epoch == 6
    assert t.max_stable_learning_rate == pytest.approx(2.14e-13, rel=1e-2)
    assert t.dominant_feature == "x2"
    assert d.diverges and d.has_errors
    assert d.codes[0] == "SF201"
    assert {"SF113", "SF115", "SF121"} <= set(d.codes)
    (sf201,) = d.by_code("SF201")
    assert "epoch 3" in sf201.message and "2.14e-13" in sf201.message
    assert sf201.fix_code is not None and "model.fit" in sf201.fix_code


def test_findings_are_sorted_most_severe_first():
    d = diagnose(X1, Y1, feature_names=NAMES, optimizer="sgd")
    ranks = [severity_rank(f.severity) for f in d.findings]
    assert ranks == sorted(ranks)


def test_default_forecasts_adam_with_sgd_beside_it():
    d = diagnose(X1, Y1, feature_names=NAMES)
    assert d.training.optimizer == "adam"
    assert d.training.learning_rate == 0.001
    assert d.training.outcome == "stalls"  # never NaN, the loss stays near 1e12
    assert d.training.first_nonfinite_epoch is None
    assert d.training.predicted_final_loss > 1e10
    (sgd,) = d.other_forecasts
    assert (sgd.optimizer, sgd.outcome, sgd.first_nonfinite_epoch) == ("sgd", "diverges", 3)
    assert not d.diverges
    assert not d.has_errors
    assert "SF202" in d.codes


def test_momentum_without_optimizer_goes_to_the_sgd_comparison():
    d = diagnose(X1, Y1, feature_names=NAMES, momentum=0.9)
    assert d.training.momentum == 0.0
    assert d.other_forecasts[0].momentum == 0.9


def test_nan_rows_are_findings_and_nan_at_epoch_1():
    X = np.vstack([X1, [[4.0, np.nan]]])
    y = np.append(Y1, 40.0)
    d = diagnose(X, y, feature_names=NAMES, optimizer="adam")
    (sf101,) = d.by_code("SF101")
    assert sf101.evidence["columns"][0]["rows"] == [3]
    assert d.training.outcome == "diverges"
    assert d.training.first_nonfinite_epoch == 1
    (sf201,) = d.by_code("SF201")
    assert "1 of 4 rows hold NaN or inf" in sf201.message


def test_value_beyond_float32_does_not_raise():
    X = np.array([[1.0], [2.0], [1e308], [4.0], [5.0]])
    y = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    d = diagnose(X, y, optimizer="sgd")
    assert "SF131" in d.codes
    assert d.training.first_nonfinite_epoch == 1
    assert d.has_errors
    assert json.loads(d.to_json())["has_errors"] is True


def test_all_nan_column_gives_no_forecast_but_errors():
    X = np.column_stack([np.arange(5.0), np.full(5, np.nan)])
    d = diagnose(X, np.arange(5.0))
    assert d.training is None
    assert {"SF101", "SF103", "SF104"} <= set(d.codes)
    assert d.has_errors
    assert "No training forecast" in str(d)


def test_without_target_only_data_checks_run():
    d = diagnose(X1, feature_names=NAMES)
    assert d.training is None
    assert "SF106" in d.codes
    assert d.facts.target_name is None


def test_well_scaled_data_converges_with_sgd():
    X, y = well_scaled()
    d = diagnose(X, y, optimizer="sgd", learning_rate=0.05)
    assert d.training.outcome == "converges"
    assert not d.has_errors
    assert not [f for f in d.findings if f.severity != "info"]


def test_json_schema():
    d = diagnose(X1, Y1, feature_names=NAMES, optimizer="sgd")
    data = json.loads(d.to_json())
    assert data["schema_version"] == SCHEMA_VERSION
    assert set(data) == {
        "schema_version",
        "data",
        "settings",
        "has_errors",
        "diverges",
        "training",
        "other_forecasts",
        "findings",
    }
    assert data["data"]["feature_names"] == NAMES
    assert data["training"]["first_nonfinite_epoch"] == 3
    first = data["findings"][0]
    assert set(first) == {"code", "severity", "title", "message", "evidence", "fix", "fix_code"}
    assert [f["code"] for f in data["findings"]] == list(d.codes)


def test_text_report_reads_top_down():
    raw = str(diagnose(X1, Y1, feature_names=NAMES, optimizer="sgd"))
    assert "\x1b[" not in raw  # plain text: no terminal escapes
    text = " ".join(raw.split())  # independent of where lines wrap
    what, why, fix = (text.index(h) for h in ("What will happen", "Why", "Fix (paste this)"))
    assert what < why < fix
    assert "SGD lr 0.01 diverges: loss inf at epoch 3, NaN by epoch 6" in text
    assert "λmax 9.33e12, dominated by x2" in text
    assert "x2 = 1e6·x1" in text and "y = 10·x1" in text


def test_reads_a_csv_file_and_names_its_lines(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("a,b,target\n1,2,3\n2,,5\n3,4,7\n4,5,9\n")
    d = diagnose(str(path), target="target", optimizer="sgd")
    assert d.facts.feature_names == ("a", "b")
    (sf101,) = d.by_code("SF101")
    assert sf101.evidence["columns"][0]["rows"] == [1]
    assert "line 3" in sf101.message


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"epochs": 2.5}, "epochs"),
        ({"dtype": "float16"}, "dtype"),
        ({"optimizer": "lbfgs"}, "lbfgs"),
    ],
)
def test_bad_settings_raise_input_errors(kwargs, match):
    with pytest.raises(StablefitInputError, match=match):
        diagnose(X1, Y1, **kwargs)


def test_terminal_report_has_colour_and_the_same_words():
    d = diagnose(X1, Y1, feature_names=NAMES, optimizer="sgd")
    buffer = io.StringIO()
    Console(file=buffer, force_terminal=True, width=100).print(renderables(d))
    coloured = buffer.getvalue()
    assert "\x1b[" in coloured
    assert "SF201" in coloured and "Fix (paste this)" in coloured


def test_divergence_that_stays_finite_is_described_not_printed_as_epoch_none():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 2))
    y = X @ [1.0, 2.0] + rng.normal(size=200)
    diagnosis = diagnose(X, y, optimizer="sgd", learning_rate=1.2, batch_size=200, epochs=20)
    assert diagnosis.training.outcome == "diverges"
    assert diagnosis.training.first_nonfinite_epoch is None
    message = next(f.message for f in diagnosis.findings if f.code == "SF201")
    assert "None" not in message
    assert "grows" in message and "turns inf around epoch" in message
