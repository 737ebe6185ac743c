"""stablefit: why is my loss NaN? Predict it, guard against it, and fit exactly."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from stablefit.diagnose import diagnose

if TYPE_CHECKING:
    from stablefit.estimator import StableLinearRegression
    from stablefit.pipeline import fit, fit_polynomial
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

# Imported when first asked for: `stablefit doctor` needs neither the fit (SciPy's solvers
# and special functions) nor scikit-learn, an optional extra.
_LAZY = {
    "fit": "stablefit.pipeline",
    "fit_polynomial": "stablefit.pipeline",
    "FitResult": "stablefit.solve.result",
    "StableLinearRegression": "stablefit.estimator",
}


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module 'stablefit' has no attribute {name!r}")
    value = getattr(import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
