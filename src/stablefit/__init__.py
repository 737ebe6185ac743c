"""stablefit: why is my loss NaN? Predict it, guard against it, and fit exactly."""

from __future__ import annotations

__version__ = "0.1.0"
