"""Predictions with standard errors, confidence and prediction intervals.

The variance of a predicted mean, ``xᵀ V x``, is formed in centered coordinates
(``[1, x - shift]`` against the covariance of ``[c + shift·b, b]``): with features far
from zero (a timestamp near 1.7e9) the form in raw coordinates cancels almost every digit.
As in statsmodels, a new observation's variance adds the residual variance σ² (divided by
its weight), and intervals use Student's t with the residual degrees of freedom, or the
normal distribution when ``use_t`` is off.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from stablefit.errors import StablefitInputError, StablefitWarning
from stablefit.solve.linalg import special

FRAME_COLUMNS = (
    "mean",
    "mean_se",
    "mean_ci_lower",
    "mean_ci_upper",
    "obs_ci_lower",
    "obs_ci_upper",
)


@dataclass(frozen=True)
class UndefinedPredictions:
    """Rows without a finite prediction, by reason: their 0-based indices (perhaps only
    the first ones) and how many there are."""

    #: Rows with a NaN or infinite feature value.
    missing: np.ndarray
    #: Rows of finite features whose prediction (or its interval) overflows a double.
    overflow: np.ndarray
    n_missing: int
    n_overflow: int

    @classmethod
    def of(cls, X: np.ndarray, *columns: np.ndarray) -> UndefinedPredictions:
        """The rows of X where one of ``columns`` (the prediction, perhaps with its standard
        error and intervals) is not finite."""
        # A NaN in a column left out as collinear (coefficient 0) leaves the prediction
        # finite: only rows without one are reported.
        undefined = ~np.isfinite(np.column_stack(columns)).all(axis=1)
        missing = undefined & ~np.isfinite(X).all(axis=1)
        missing_rows = np.flatnonzero(missing)
        overflow_rows = np.flatnonzero(undefined & ~missing)
        return cls(missing_rows, overflow_rows, missing_rows.size, overflow_rows.size)

    def __len__(self) -> int:
        return self.n_missing + self.n_overflow

    def describe(self, format_rows: Any, what: str = "prediction") -> str:
        """The reasons, each with its rows as ``format_rows(indices, total=n)`` names
        them (:meth:`stablefit.io.Schema.format_rows`); ``what`` overflows."""
        parts = []
        if self.n_missing:
            rows = format_rows(self.missing, total=self.n_missing)
            parts.append(f"{self.n_missing} with a missing or infinite feature value ({rows})")
        if self.n_overflow:
            rows = format_rows(self.overflow, total=self.n_overflow)
            parts.append(
                f"{self.n_overflow} whose {what} overflows a double, its features being "
                f"finite ({rows}: rescale those features)"
            )
        return "; ".join(parts)


def warn_if_undefined(X: np.ndarray, predicted: np.ndarray, *more: np.ndarray) -> None:
    """Warn of the rows of ``X`` (0-based) whose prediction (or what comes with it, ``more``)
    is NaN or inf: never silent."""
    undefined = UndefinedPredictions.of(X, predicted, *more)
    if len(undefined):
        from stablefit.io.schema import Schema

        rows = Schema(feature_names=()).format_rows
        what = "prediction or standard error" if more else "prediction"
        warnings.warn(
            f"{len(undefined)} of {len(predicted)} rows have no finite {what}: "
            f"{undefined.describe(rows, what)}",
            StablefitWarning,
            stacklevel=3,
        )


def critical_value(alpha: float, df: float, use_t: bool) -> float:
    """The two-sided 1 - alpha quantile of t(df), or of the standard normal."""
    if not 0.0 < alpha / 2.0 < 0.5:  # half of 5e-324 is 0
        raise StablefitInputError(f"alpha must lie in (0, 1), above 1e-323, got {alpha}")
    # From the lower tail, -q(alpha/2): 1 - alpha/2 rounds to 1 for alpha below 1e-16 (an
    # infinite quantile, empty intervals) and keeps few digits of alpha near 1.
    if use_t:
        # Undefined without degrees of freedom (and then no need to import SciPy).
        return -float(special().stdtrit(df, alpha / 2.0)) if df > 0 else float("nan")
    return -float(special().ndtri(alpha / 2.0))


@dataclass(frozen=True)
class PredictionBasis:
    """What predictions and intervals need, in centered coordinates: the features' shifts
    (the kept features' means), the intercept at the shifts ``c + shift·b`` (formed in
    double-double), the covariance of ``[c + shift·b, b]`` (intercept first when fitted),
    the residual variance and degrees of freedom. ``kept`` indexes the kept features among
    all; ``weights_name`` names the fit's weights (None without), whose scale σ² is that of
    a row of weight 1."""

    shift: np.ndarray
    centered_intercept: float
    centered_covariance: np.ndarray
    kept: np.ndarray
    has_intercept: bool
    scale: float
    df_resid: int
    use_t: bool
    weights_name: str | None = None

    def mean(self, X: np.ndarray, coef: np.ndarray) -> np.ndarray:
        """``c + X b`` as ``(c + shift·b) + (X - shift) b``: near the data's means the
        subtraction is exact, so far-off features (1.7e9) cost no digits."""
        with np.errstate(invalid="ignore", over="ignore"):
            return self.centered_intercept + (X[:, self.kept] - self.shift) @ coef[self.kept]

    def mean_se(self, X: np.ndarray) -> np.ndarray:
        """√(xᵀVx) in centered coordinates, each row divided by its largest entry first
        (and the result multiplied back): a row far out (1e160) has a standard error within
        float64's range whose square is not."""
        with np.errstate(invalid="ignore", over="ignore"):
            centered = X[:, self.kept] - self.shift
            if self.has_intercept:
                centered = np.column_stack([np.ones(X.shape[0]), centered])
            size = np.max(np.abs(centered), axis=1, initial=0.0)
            unit = centered / np.where((size > 0) & np.isfinite(size), size, 1.0)[:, None]
            form = np.einsum("ij,ij->i", unit @ self.centered_covariance, unit)
            return size * np.sqrt(form)

    def to_dict(self, feature_names: tuple[str, ...]) -> dict[str, Any]:
        names = [feature_names[j] for j in self.kept]
        return {
            "has_intercept": self.has_intercept,
            "shift": dict(zip(names, self.shift.tolist(), strict=True)),
            "centered_intercept": self.centered_intercept,
            "centered_covariance": self.centered_covariance.tolist(),
            "scale": self.scale,
            "df_resid": self.df_resid,
            "use_t": self.use_t,
            "weights": self.weights_name,
        }

    @classmethod
    def from_dict(cls, document: dict[str, Any], feature_names: tuple[str, ...]) -> PredictionBasis:
        has_intercept = bool(document["has_intercept"])
        shift = document["shift"]
        kept = np.array([feature_names.index(name) for name in shift], dtype=np.int64)
        covariance = np.array(document["centered_covariance"], dtype=np.float64)
        size = kept.size + int(has_intercept)
        if covariance.shape != (size, size):
            raise StablefitInputError(
                f"the model's centered_covariance has shape {covariance.shape}, expected "
                f"({size}, {size})"
            )
        return cls(
            shift=np.array(list(shift.values()), dtype=np.float64),
            centered_intercept=float(document["centered_intercept"]),
            centered_covariance=covariance,
            kept=kept,
            has_intercept=has_intercept,
            scale=float(document["scale"]),
            df_resid=int(document["df_resid"]),
            use_t=bool(document["use_t"]),
            weights_name=_optional_name(document.get("weights")),
        )


@dataclass(frozen=True)
class Prediction:
    """Predicted means with standard errors and intervals (statsmodels' PredictionResults).

    Attributes
    ----------
    predicted : ndarray
        The predicted means.
    se_mean : ndarray
        Standard errors of the predicted means.
    se_obs : ndarray
        Standard errors of a new observation: √(se_mean² + σ²/weight).
    df : int
        Degrees of freedom of the t quantiles.
    use_t : bool
        Student's t (True) or the normal distribution.
    """

    predicted: np.ndarray
    se_mean: np.ndarray
    se_obs: np.ndarray
    df: int
    use_t: bool

    def conf_int(self, alpha: float = 0.05, *, obs: bool = False) -> np.ndarray:
        """(n, 2) intervals for the mean, or for a new observation with ``obs=True``."""
        # Beyond float64 (a row far out at a tiny alpha) a bound is infinite; inf - inf: a
        # row without a prediction. Callers report such rows.
        with np.errstate(invalid="ignore", over="ignore"):
            half = critical_value(alpha, self.df, self.use_t) * (
                self.se_obs if obs else self.se_mean
            )
            return np.column_stack([self.predicted - half, self.predicted + half])

    def columns(self, alpha: float = 0.05) -> dict[str, np.ndarray]:
        """The columns of :meth:`summary_frame` as arrays."""
        mean_ci, obs_ci = self.conf_int(alpha), self.conf_int(alpha, obs=True)
        return dict(
            zip(
                FRAME_COLUMNS,
                (self.predicted, self.se_mean, *mean_ci.T, *obs_ci.T),
                strict=True,
            )
        )

    def summary_frame(self, alpha: float = 0.05) -> Any:
        """A pandas DataFrame with statsmodels' columns: mean, mean_se, mean_ci_lower,
        mean_ci_upper, obs_ci_lower, obs_ci_upper."""
        try:
            import pandas as pd
        except ImportError:
            raise StablefitInputError(
                "summary_frame needs pandas (pip install 'stablefit[pandas]'); "
                "Prediction.columns() gives the same as arrays"
            ) from None
        return pd.DataFrame(self.columns(alpha))


def predict_with_intervals(
    X: np.ndarray,
    coef: np.ndarray,
    basis: PredictionBasis,
    weights: Any = None,
) -> Prediction:
    """A :class:`Prediction` for the rows of X (all features, in the fitted order).

    ``weights`` are the new rows' weights (one, or one per row), as statsmodels' WLS
    ``get_prediction(weights=)``: a new observation's variance is σ²/weight. None takes
    weight 1, with a warning when the fit was weighted (σ² is then the variance of a row
    of weight 1, which the new rows need not be).
    """
    predicted = basis.mean(X, coef)
    se_mean = basis.mean_se(X)
    if weights is None:
        if basis.weights_name is not None:
            warnings.warn(
                f"the fit is weighted by {basis.weights_name!r}: the intervals of new "
                "observations (obs_ci) take weight 1 for every row; pass weights= (each "
                "row's weight, as the fit's) for theirs",
                StablefitWarning,
                stacklevel=3,
            )
        weights = 1.0
    weights = new_weights(weights, X.shape[0])
    with np.errstate(invalid="ignore", over="ignore"):
        se_obs = np.hypot(se_mean, np.sqrt(basis.scale / weights))
    return Prediction(predicted, se_mean, se_obs, basis.df_resid, basis.use_t)


def new_weights(weights: Any, n_rows: int) -> np.ndarray:
    """The new rows' weights as floats: one for all rows, or one per row, each positive
    and finite; an error names the rows that are not."""
    from stablefit.io.memory import float_array

    values = float_array(weights, "weights")
    if values.ndim > 1 or values.size not in (1, n_rows):
        raise StablefitInputError(
            f"weights has shape {values.shape}; give one weight, or one per row ({n_rows})"
        )
    with np.errstate(invalid="ignore"):
        bad = np.flatnonzero(~(values > 0) | np.isinf(values))
    if bad.size:
        from stablefit.io.schema import Schema

        rows = Schema(feature_names=()).format_rows(bad, total=bad.size)
        raise StablefitInputError(
            f"weights of new observations must be positive and finite; {bad.size} are not "
            f"({rows}): a new observation's variance is σ²/weight"
        )
    return values


def _optional_name(value: Any) -> str | None:
    return None if value is None else str(value)
