"""Accuracy against NIST's certified values (StRD linear regression, all 11 datasets)."""

from __future__ import annotations

import hashlib
from fractions import Fraction

import numpy as np
import pytest

import stablefit
from tests.nist import CERTIFIED, NAMES, NIST_DIR, load, lre
from tests.solve.exact import exact_fit


def fit_case(case):
    if case.model["type"].startswith("polynomial"):
        return stablefit.fit_polynomial(
            case.columns["x"], case.y, case.model["degree"], intercept=case.model["intercept"]
        )
    X = np.column_stack([case.columns[c] for c in case.model["predictor_columns"]])
    return stablefit.fit(X, case.y, feature_names=case.model["predictor_columns"])


@pytest.fixture(scope="module", params=NAMES)
def nist(request):
    case = load(request.param)
    return case, fit_case(case)


def test_coefficients_agree_to_13_digits(nist):
    case, result = nist
    lres = [lre(b, ref) for b, ref in zip(result.params, case.estimates, strict=True)]
    assert min(lres) >= 13, lres


def test_standard_errors_agree_to_10_digits(nist):
    case, result = nist
    for se, ref in zip(result.bse, case.std_devs, strict=True):
        if ref == 0:  # exact fits (Wampler1, Wampler2): the error is relative to the coefficients
            assert se <= 1e-13 * np.max(np.abs(result.params))
        else:
            assert lre(se, ref) >= 10


def test_rsquared_and_residual_sd(nist):
    case, result = nist
    assert lre(result.rsquared, case.r_squared) >= 10
    if case.residual_sd == 0:
        assert result.resid_std <= 1e-13 * np.abs(case.y).max()
    else:
        assert lre(result.resid_std, case.residual_sd) >= 10


def _exact_solution(case) -> list[Fraction]:
    """Least squares of the float64 data in exact rational arithmetic."""
    if case.model["type"].startswith("polynomial"):
        x = [Fraction(v) for v in case.columns["x"]]
        powers = range(0 if case.model["intercept"] else 1, case.model["degree"] + 1)
        columns = [[xi**k for xi in x] for k in powers]
    else:
        columns = [[1.0] * case.y.size] + [
            case.columns[c].tolist() for c in case.model["predictor_columns"]
        ]
    return exact_fit(columns, case.y).solution


def test_certificate_never_overstates(nist):
    """Digits claimed <= digits achieved against the exact solution of the data as given."""
    case, result = nist
    exact = _exact_solution(case)
    for claimed, estimate, reference in zip(
        result.certificate.digits_per_coef, result.params, exact, strict=True
    ):
        error = abs(Fraction(float(estimate)) - reference) / abs(reference)
        achieved = 16.0 if error == 0 else -np.log10(float(error))
        assert claimed <= achieved, (claimed, achieved)
    assert result.certificate.digits >= 13


@pytest.mark.parametrize("name", NAMES)
def test_nist_files_are_intact(name):
    entry = CERTIFIED[name]
    digest = hashlib.sha256((NIST_DIR / entry["file"]).read_bytes()).hexdigest()
    assert digest == entry["sha256"]
