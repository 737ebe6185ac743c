"""A fitted linear model as a small JSON document: saved and loaded without pickle."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stablefit.errors import StablefitInputError
from stablefit.report.files import write_text_atomic

FORMAT = "stablefit.linear-model"
VERSION = 1


@dataclass(frozen=True)
class LinearModel:
    """``prediction = intercept + Σ coef[j] · feature_j``, features by name.

    Floats are written with Python's shortest round-trip representation, so a saved and
    loaded model predicts exactly what the fitted one does.

    Examples
    --------
    >>> import numpy as np
    >>> model = LinearModel(("a", "b"), "y", np.array([2.0, -1.0]), 0.5)
    >>> LinearModel.from_dict(model.to_dict()).predict(np.array([[1.0, 1.0]])).tolist()
    [1.5]
    """

    feature_names: tuple[str, ...]
    target_name: str
    coef: np.ndarray
    intercept: float

    def predict(self, X: Any) -> np.ndarray:
        """Predictions for the rows of X (n, d), columns in ``feature_names`` order.

        A row with a NaN or inf feature gets a NaN prediction; callers report those rows.
        """
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 1:
            X = X[None, :]
        if X.ndim != 2 or X.shape[1] != self.coef.size:
            raise StablefitInputError(
                f"X has shape {X.shape}; the model expects {self.coef.size} columns "
                f"({', '.join(self.feature_names)})"
            )
        with np.errstate(invalid="ignore", over="ignore"):
            return X @ self.coef + self.intercept

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "target": self.target_name,
            "intercept": float(self.intercept),
            "coefficients": {
                name: float(c) for name, c in zip(self.feature_names, self.coef, strict=True)
            },
        }

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> LinearModel:
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise StablefitInputError(f"not a {FORMAT} document (no 'format': '{FORMAT}')")
        if document.get("version") != VERSION:
            raise StablefitInputError(
                f"model format version {document.get('version')!r} is not supported "
                f"(this stablefit reads version {VERSION})"
            )
        coefficients = document.get("coefficients")
        if not isinstance(coefficients, dict) or not coefficients:
            raise StablefitInputError("the model has no 'coefficients' object")
        values = [*coefficients.values(), document.get("intercept")]
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
            raise StablefitInputError(
                "the model's coefficients and intercept must be finite numbers"
            )
        return cls(
            feature_names=tuple(str(name) for name in coefficients),
            target_name=str(document.get("target", "y")),
            coef=np.array([float(v) for v in coefficients.values()]),
            intercept=float(document["intercept"]),
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the model as JSON, atomically."""
        write_text_atomic(path, json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LinearModel:
        try:
            document = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise StablefitInputError(f"{path}: model file not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise StablefitInputError(f"{path}: not a JSON model file ({error})") from None
        return cls.from_dict(document)
