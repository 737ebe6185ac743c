"""StableLinearRegression follows scikit-learn's estimator contract in full."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression
from sklearn.utils.estimator_checks import parametrize_with_checks

from stablefit import StableLinearRegression


@parametrize_with_checks([StableLinearRegression()])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_agrees_with_linear_regression_on_well_conditioned_data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 4))
    y = X @ [1.0, -2.0, 3.0, 0.5] + 4.0 + rng.normal(size=200)
    ours = StableLinearRegression().fit(X, y)
    theirs = LinearRegression().fit(X, y)
    np.testing.assert_allclose(ours.coef_, theirs.coef_, rtol=1e-12)
    assert ours.intercept_ == pytest.approx(theirs.intercept_, rel=1e-12)
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=1e-12)
    assert ours.certificate_.digits >= 14


def test_collinear_feature_is_reported_not_hidden():
    X = np.array([[1.0, 1e6], [2.0, 2e6], [3.0, 3e6], [4.0, 4e6]])
    model = StableLinearRegression().fit(X, 10 * X[:, 0])
    assert model.dropped_features_ == ["x1"]
    assert model.coef_[0] == pytest.approx(10.0, rel=1e-14)
    assert model.coef_[1] == 0.0


def test_missing_option_is_validated():
    with pytest.raises(ValueError, match="missing='sometimes'"):
        StableLinearRegression(missing="sometimes").fit(np.eye(3), np.ones(3))
