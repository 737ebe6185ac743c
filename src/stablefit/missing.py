"""The options of ``missing``: what the fit does with rows that hold NaN or inf."""

from __future__ import annotations

from typing import Literal

Missing = Literal["error", "drop", "impute"]
MISSING_CHOICES: tuple[Missing, ...] = ("error", "drop", "impute")
