"""What the Diagnosis carries for its report: loss histories, the stability map, column
profiles — checked against the forecast itself and against statsmodels."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.stats.outliers_influence import variance_inflation_factor

import stablefit
from stablefit.diagnose.stability_map import map_learning_rates


@pytest.fixture(scope="module")
def seed_example():
    X = np.array([[1.0, 1e6], [2.0, 2e6], [3.0, 3e6]])
    return stablefit.diagnose(X, np.array([10.0, 20.0, 30.0]), optimizer="sgd")


def test_the_loss_history_is_the_forecasts_own(seed_example):
    training = seed_example.training
    history = training.loss_history
    assert history.losses.shape == (len(training.seeds), training.epochs)
    first = np.argmax(~np.isfinite(history.losses), axis=1) + 1
    assert first.min() == training.first_nonfinite_epoch == 3
    assert training.recommended.loss_history.losses.shape[1] == training.recommended.epochs


def test_rows_with_nan_make_the_history_nan_from_epoch_1():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 2))
    X[4, 1] = np.nan
    diagnosis = stablefit.diagnose(X, X[:, 0], optimizer="sgd", learning_rate=0.01)
    assert np.isnan(diagnosis.training.loss_history.losses).all()


def test_the_stability_map_diverges_exactly_above_sgds_bound(seed_example):
    stability = seed_example.stability_map
    bound = stability.bounds["sgd"]
    assert bound == pytest.approx(2 / seed_example.training.lambda_max)
    row = stability.outcomes[stability.optimizers.index("sgd")]
    for rate, outcome in zip(stability.learning_rates, row, strict=True):
        assert (outcome == "diverges") == (rate > bound), rate
    assert stability.chosen_outcome == seed_example.training.outcome
    assert stability.outcome("sgd", 0.01) == "diverges"


def test_map_learning_rates_span_the_anchors_on_a_1_2_5_grid():
    rates = map_learning_rates([1e-3, 1e-2])
    assert rates[0] == pytest.approx(1e-5) and rates[-1] == pytest.approx(1.0)
    assert np.allclose(rates[:3], [1e-5, 2e-5, 5e-5])
    assert len(map_learning_rates([2e-13, 1e-2])) <= 30


def test_column_profiles_match_statsmodels_vif_and_name_the_missing_rows():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(300, 3))
    X[:, 2] = X[:, 0] + 0.1 * rng.normal(size=300)
    y = X @ [1.0, 2.0, 3.0] + rng.normal(size=300)
    columns = stablefit.diagnose(X, y).columns
    design = np.column_stack([np.ones(300), X])
    for j, column in enumerate(columns[:3]):
        assert column.vif == pytest.approx(variance_inflation_factor(design, j + 1), rel=1e-9)
    assert columns[3].role == "target" and np.isnan(columns[3].vif)
    X[[10, 20], 1] = np.nan
    profile = stablefit.diagnose(X, y).columns[1]
    assert (profile.n_nan, profile.nonfinite_rows) == (2, "rows 10, 20")
