"""Accuracy on NIST's StRD linear datasets: stablefit against numpy, scikit-learn, statsmodels.

Minimum log relative error (digits) of the coefficients against NIST's certified values,
for each library given the same float64 design matrix (powers of x for the polynomial
datasets; stablefit.fit_polynomial forms them itself in double-double).

    python benchmarks/bench_nist.py
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import statsmodels.api as sm
from sklearn.linear_model import LinearRegression

import stablefit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.nist import NAMES, load, lre


def design(case) -> tuple[np.ndarray, bool]:
    """The float64 design without the constant column, and whether there is an intercept."""
    model = case.model
    if model["type"].startswith("polynomial"):
        x = case.columns["x"]
        return np.column_stack([x**k for k in range(1, model["degree"] + 1)]), model["intercept"]
    return np.column_stack([case.columns[c] for c in model["predictor_columns"]]), True


def solve_all(case) -> dict[str, np.ndarray]:
    X, intercept = design(case)
    A = sm.add_constant(X, has_constant="add") if intercept else X
    if case.model["type"].startswith("polynomial"):
        ours = stablefit.fit_polynomial(
            case.columns["x"], case.y, case.model["degree"], intercept=intercept
        ).params
    else:
        ours = stablefit.fit(X, case.y).params
    sk = LinearRegression(fit_intercept=intercept).fit(X, case.y)
    return {
        "stablefit": ours,
        "numpy lstsq": np.linalg.lstsq(A, case.y, rcond=None)[0],
        "sklearn": np.concatenate([[sk.intercept_], sk.coef_]) if intercept else sk.coef_,
        "statsmodels": sm.OLS(case.y, A).fit().params,
    }


def main() -> None:
    rows = []
    for name in NAMES:
        case = load(name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            estimates = solve_all(case)
        rows.append(
            (
                name,
                {
                    k: min(lre(b, r) for b, r in zip(v, case.estimates, strict=True))
                    for k, v in estimates.items()
                },
            )
        )
    libraries = list(rows[0][1])
    print(f"{'dataset':<10}" + "".join(f"{lib:>14}" for lib in libraries))
    for name, scores in rows:
        print(f"{name:<10}" + "".join(f"{scores[lib]:>14.1f}" for lib in libraries))


if __name__ == "__main__":
    main()
