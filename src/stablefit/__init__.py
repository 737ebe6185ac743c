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

# Imported when first asked for: the fit needs SciPy, which `stablefit doctor` never loads
# (0.15 s), and scikit-learn is an optional extra.
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
