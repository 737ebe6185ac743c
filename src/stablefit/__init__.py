"""stablefit: why is my loss NaN? Predict it, guard against it, and fit exactly."""

from __future__ import annotations

from stablefit.diagnose import diagnose
from stablefit.fit import fit, fit_polynomial
from stablefit.solve.result import FitResult

__version__ = "0.1.0"

__all__ = [
    "FitResult",
    "StableLinearRegression",
    "__version__",
    "diagnose",
    "fit",
    "fit_polynomial",
]


def __getattr__(name: str) -> object:
    # scikit-learn is an optional extra: import it only when the estimator is asked for.
    if name == "StableLinearRegression":
        from stablefit.estimator import StableLinearRegression

        return StableLinearRegression
    raise AttributeError(f"module 'stablefit' has no attribute {name!r}")
