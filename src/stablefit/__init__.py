"""stablefit: why is my loss NaN? Predict it, guard against it, and fit exactly."""

from __future__ import annotations

from stablefit.fit import fit, fit_polynomial
from stablefit.solve.result import FitResult

__version__ = "0.1.0"

__all__ = ["FitResult", "__version__", "fit", "fit_polynomial"]
