"""A fitted linear model as a small JSON document: saved and loaded without pickle."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from stablefit.errors import StablefitInputError
from stablefit.report.files import write_text_atomic

if TYPE_CHECKING:
    from stablefit.solve.prediction import Prediction, PredictionBasis

FORMAT = "stablefit.linear-model"
VERSION = 1
# A model takes a few bytes per feature: a file beyond this is not one.
MAX_MODEL_BYTES = 64 << 20


@dataclass(frozen=True)
class LinearModel:
    """``prediction = intercept + Σ coef[j] · feature_j``, features by name.

    Floats are written with Python's shortest round-trip representation, so a saved and
    loaded model predicts exactly what the fitted one does. A model saved from a fit also
    holds what confidence and prediction intervals need (``prediction_basis``: the kept
    features' means, the covariance of ``cov_type`` in centered coordinates, σ² and the
    degrees of freedom), so :meth:`predict_intervals` gives the fit's own intervals.

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
    prediction_basis: PredictionBasis | None = None
    cov_type: str = "nonrobust"

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
        if self.prediction_basis is not None:
            return self.prediction_basis.mean(X, self.coef)
        with np.errstate(invalid="ignore", over="ignore"):
            return X @ self.coef + self.intercept

    def predict_intervals(self, X: Any, weights: Any = None) -> Prediction:
        """Predictions with standard errors and intervals (see
        :meth:`stablefit.FitResult.get_prediction`, also for ``weights``, the new rows'
        weights after a weighted fit); rows with a missing feature get NaN."""
        from stablefit.solve.prediction import predict_with_intervals

        if self.prediction_basis is None:
            raise StablefitInputError(
                "this model holds no covariance for intervals; save it again with "
                "stablefit 0.1's 'fit --save'"
            )
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        return predict_with_intervals(X, self.coef, self.prediction_basis, weights)

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "target": self.target_name,
            "intercept": float(self.intercept),
            "coefficients": {
                name: float(c) for name, c in zip(self.feature_names, self.coef, strict=True)
            },
        }
        if self.prediction_basis is not None:
            document["intervals"] = {
                "cov_type": self.cov_type,
                **self.prediction_basis.to_dict(self.feature_names),
            }
        return document

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
        numbers = [_finite_number(v) for v in values]
        if None in numbers:
            bad = values[numbers.index(None)]
            shown = repr(bad) if len(repr(bad)) <= 40 else repr(bad)[:37] + "..."
            raise StablefitInputError(
                f"the model's coefficients and intercept must be finite numbers, not {shown}"
            )
        names = tuple(str(name) for name in coefficients)
        basis, cov_type = None, "nonrobust"
        intervals = document.get("intervals")
        if intervals is not None:
            from stablefit.solve.prediction import PredictionBasis

            try:
                basis = PredictionBasis.from_dict(intervals, names)
                cov_type = str(intervals.get("cov_type", "nonrobust"))
            except (KeyError, TypeError, ValueError) as error:
                raise StablefitInputError(
                    f"the model's 'intervals' are malformed ({error!r}); save the model again"
                ) from None
        return cls(
            feature_names=names,
            target_name=str(document.get("target", "y")),
            coef=np.array(numbers[:-1], dtype=np.float64),
            intercept=float(numbers[-1]),  # type: ignore[arg-type]
            prediction_basis=basis,
            cov_type=cov_type,
        )

    def to_json(self) -> str:
        """The model as a JSON document (what :meth:`save` writes)."""
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the model as JSON, atomically."""
        write_text_atomic(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LinearModel:
        """Read a model saved by :meth:`save`; anything else is an input error naming it."""
        try:
            with open(path, "rb") as file:
                data = file.read(MAX_MODEL_BYTES + 1)
        except FileNotFoundError:
            raise StablefitInputError(f"{path}: model file not found") from None
        except OSError as error:
            raise StablefitInputError(
                f"{path}: cannot read the model file ({error.strerror}); save one with "
                "'stablefit fit DATA --target COL --save MODEL.json'."
            ) from None
        if len(data) > MAX_MODEL_BYTES:
            raise StablefitInputError(
                f"{path}: larger than {MAX_MODEL_BYTES >> 20} MiB, so not a model saved by "
                "stablefit (those take a few bytes per feature)"
            )
        try:
            document = json.loads(data.decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise StablefitInputError(f"{path}: not a JSON model file ({error})") from None
        except RecursionError:
            raise StablefitInputError(
                f"{path}: not a model saved by stablefit (its JSON is nested too deeply)"
            ) from None
        except ValueError as error:  # Python's limit on the digits of an integer
            raise StablefitInputError(f"{path}: not a model saved by stablefit ({error})") from None
        try:
            return cls.from_dict(document)
        except StablefitInputError as error:
            raise StablefitInputError(f"{path}: {error}") from None


def _finite_number(value: Any) -> float | None:
    """``value`` as a finite float, or None (booleans, text and overflowing integers too)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None
