"""The residual sample of a fit against statsmodels' influence measures."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm

import stablefit


@pytest.mark.parametrize("offset", [0.0, 1e6])
def test_residuals_leverage_and_cooks_distance_match_statsmodels(offset):
    rng = np.random.default_rng(4)
    X = rng.normal(size=(400, 3)) + offset
    y = X @ [1.0, -2.0, 0.5] + rng.normal(size=400)
    sample = stablefit.fit(X, y).residual_sample
    # The same model on centered columns (exact up to the rounding of the centering):
    # statsmodels on the raw columns near 1e6 loses about five digits of the residuals.
    centered = X - X.mean(axis=0)
    influence = sm.OLS(y, sm.add_constant(centered)).fit().get_influence()
    np.testing.assert_array_equal(sample.rows, np.arange(400))
    np.testing.assert_allclose(sample.leverage, influence.hat_matrix_diag, rtol=1e-8)
    np.testing.assert_allclose(sample.resid, influence.resid, atol=1e-8)
    np.testing.assert_allclose(sample.standardized, influence.resid_studentized_internal, rtol=1e-7)
    np.testing.assert_allclose(sample.cooks_distance, influence.cooks_distance[0], rtol=1e-7)


def test_a_file_keeps_at_most_2000_rows_numbered_by_line_without_the_dropped_ones(tmp_path):
    rng = np.random.default_rng(5)
    n = 9000
    x = rng.normal(size=n)
    y = 3 * x + rng.normal(size=n)
    lines = ["x,y"] + [f"{float(a)!r},{float(b)!r}" for a, b in zip(x, y, strict=True)]
    lines[1] = "nan,1.0"  # row 0, file line 2: left out with missing="drop"
    path = tmp_path / "data.csv"
    path.write_text("\n".join(lines) + "\n")
    result = stablefit.fit(str(path), target="y", missing="drop")
    sample = result.residual_sample
    assert sample.row_label == "line" and 1000 < sample.rows.size <= 2000
    assert 2 not in sample.rows  # the NaN row is not in the fit
    rows = sample.rows - 2  # file line 2 is row 0
    np.testing.assert_allclose(sample.fitted, result.predict(x[rows]), rtol=1e-12, atol=1e-12)
