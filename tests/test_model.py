"""Saved models: JSON round trip, exact predictions, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

import stablefit
from stablefit.errors import StablefitInputError
from stablefit.model import LinearModel


def test_round_trip_predicts_exactly(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 3)) * [1e-3, 1.0, 1e6]
    y = X @ [3.0, -2.0, 1e-6] + 0.1 * rng.normal(size=50)
    result = stablefit.fit(X, y, feature_names=["a", "b", "c"])
    path = tmp_path / "model.json"
    result.to_model().save(path)
    loaded = LinearModel.load(path)
    assert loaded.feature_names == ("a", "b", "c")
    np.testing.assert_array_equal(loaded.predict(X), result.predict(X))
    assert json.loads(path.read_text())["coefficients"]["c"] == result.coef[2]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("not json", "not a JSON model file"),
        ('{"format": "other"}', "not a stablefit.linear-model"),
        ('{"format": "stablefit.linear-model", "version": 9}', "version 9"),
        (
            '{"format": "stablefit.linear-model", "version": 1, "intercept": 0,'
            ' "coefficients": {"a": NaN}}',
            "finite numbers",
        ),
    ],
)
def test_bad_model_files_are_rejected_clearly(tmp_path, content, match):
    path = tmp_path / "model.json"
    path.write_text(content)
    with pytest.raises(StablefitInputError, match=match):
        LinearModel.load(path)


def test_predict_checks_the_number_of_columns():
    model = LinearModel(("a", "b"), "y", np.array([1.0, 2.0]), 0.0)
    with pytest.raises(StablefitInputError, match="expects 2 columns"):
        model.predict(np.ones((3, 3)))
