"""StableLinearRegression: stablefit's exact fit as a scikit-learn estimator."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from stablefit.missing import MISSING_CHOICES
from stablefit.pipeline import fit
from stablefit.solve.prediction import warn_if_undefined
from stablefit.solve.result import FitResult


class StableLinearRegression(RegressorMixin, BaseEstimator):
    """Ordinary least squares, exact to the digits its certificate states.

    Unlike ``LinearRegression``, features collinear to within rounding are reported and left
    out (``dropped_features_``) rather than silently replaced by a minimum-norm answer, and
    ``certificate_`` says how many digits of ``coef_`` can be trusted.

    Parameters
    ----------
    fit_intercept : bool, default True
        Fit a constant term.
    missing : {"error", "drop", "impute"}, default "error"
        Handling of NaN and inf, as in :func:`stablefit.fit`.
    cov_type : {"nonrobust", "HC0", "HC1", "HC2", "HC3"}, default "nonrobust"
        The covariance behind ``result_``'s standard errors, as in :func:`stablefit.fit`.

    Attributes
    ----------
    coef_ : ndarray of shape (n_features,)
    intercept_ : float
    result_ : FitResult
        Standard errors, p-values, confidence intervals and notes.
    certificate_ : Certificate
    dropped_features_ : list of str
    n_features_in_ : int
    feature_names_in_ : ndarray of str, only when X had string column names

    Examples
    --------
    >>> import numpy as np
    >>> from stablefit import StableLinearRegression
    >>> X = np.array([[1.0, 2.0], [2.0, 1.0], [3.0, 5.0], [4.0, 3.0]])
    >>> model = StableLinearRegression().fit(X, X @ [2.0, -1.0] + 0.5)
    >>> np.round(model.coef_, 12).tolist(), round(model.intercept_, 12)
    ([2.0, -1.0], 0.5)
    """

    def __init__(
        self, *, fit_intercept: bool = True, missing: str = "error", cov_type: str = "nonrobust"
    ) -> None:
        self.fit_intercept = fit_intercept
        self.missing = missing
        self.cov_type = cov_type

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> StableLinearRegression:
        """Fit; ``sample_weight`` gives weighted least squares. As in scikit-learn, a row
        of weight 0 is left out (``stablefit.fit`` refuses it instead); a negative or
        infinite weight is an error naming its rows."""
        if self.missing not in MISSING_CHOICES:
            raise ValueError(
                f"missing={self.missing!r} is not an option; use one of {MISSING_CHOICES}"
            )
        X, y = validate_data(
            self,
            X,
            y,
            y_numeric=True,
            dtype=np.float64,
            ensure_all_finite=self.missing == "error",
        )
        names = getattr(self, "feature_names_in_", None)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64)
            weighted = sample_weight != 0
            X, y, sample_weight = X[weighted], y[weighted], sample_weight[weighted]
        result: FitResult = fit(
            X,
            y,
            intercept=self.fit_intercept,
            missing=self.missing,
            weights=sample_weight,
            cov_type=self.cov_type,
            feature_names=None if names is None else [str(n) for n in names],
        )
        self.result_ = result
        self.coef_ = result.coef
        self.intercept_ = result.intercept
        self.certificate_ = result.certificate
        self.dropped_features_ = [d.name for d in result.dropped]
        return self

    def predict(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            predicted = X @ self.coef_ + self.intercept_
        warn_if_undefined(X, predicted)  # finite features whose prediction overflows
        return predicted
