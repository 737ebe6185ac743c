"""FitResult: the fitted linear model, its inference and its accuracy certificate."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from stablefit.cov_type import DESCRIPTIONS
from stablefit.errors import StablefitInputError
from stablefit.model import LinearModel
from stablefit.solve.certificate import Certificate
from stablefit.solve.covariance import Covariance, CovarianceBuilder
from stablefit.solve.linalg import special
from stablefit.solve.prediction import (
    Prediction,
    PredictionBasis,
    critical_value,
    predict_with_intervals,
    warn_if_undefined,
)
from stablefit.solve.restrictions import RestrictionTest, parse_restrictions, restriction_test

if TYPE_CHECKING:
    from stablefit.report.fit import FitSummary
from stablefit.solve.residuals import ResidualSample


@dataclass(frozen=True)
class DroppedFeature:
    """A feature left out of the fit because other columns determine it."""

    name: str
    relation: str


@dataclass(eq=False)
class FitResult:
    """A least-squares fit in the units of the data (statsmodels-style results object).

    Coefficients of features that were left out as collinear (to within rounding) are 0 with NaN
    standard errors; ``dropped`` and ``notes`` say which and why.

    Attributes
    ----------
    feature_names, target_name : names of the features and the target
    coef, intercept : the fitted coefficients (``intercept`` 0.0 without one)
    has_intercept : bool
    covariance : ndarray
        Covariance of ``params`` (intercept first) of type ``cov_type``.
    cov_type : str
        ``"nonrobust"``, ``"HC0"``–``"HC3"`` or ``"cluster"``; another type of the same fit
        comes from :meth:`get_robustcov`.
    use_t : bool
        Student's t and F for inference (Stata's convention); False gives the normal and
        χ² (statsmodels' default for robust types).
    n_obs : int
        Rows used.
    df_resid : int
        n_obs minus the number of fitted parameters.
    df_inference : int
        Degrees of freedom of t and F: ``df_resid``, or G - 1 for clustered errors
        (min(G₁, G₂) - 1 for two ways).
    n_groups : tuple of int
        Clusters per clustering (empty unless ``cov_type == "cluster"``).
    group_names : tuple of str
        The clusterings' columns (``"groups"`` for an array).
    sse, sst : float
        Residual and total sums of squares (weighted for WLS; ``sst`` centered with an
        intercept, Σ w y² without).
    weights_name : str or None
        The weights' column (``"weights"`` for an array); None for ordinary least squares.
    sum_log_weights : float
        Σ log w over the rows used (0 without weights), for the log-likelihood.
    certificate : Certificate
    n_dropped_rows, n_imputed_values : int
    dropped : tuple of DroppedFeature
    notes : list of str
        Numbered notes, as statsmodels prints them under its tables.
    residual_sample : ResidualSample or None
        Residuals and leverage of a few thousand of the fitted rows, evenly spread
        (:class:`~stablefit.solve.residuals.ResidualSample`), for the report's plots.
    """

    feature_names: tuple[str, ...]
    target_name: str
    coef: np.ndarray
    intercept: float
    has_intercept: bool
    covariance: np.ndarray
    n_obs: int
    df_resid: int
    sse: float
    sst: float
    certificate: Certificate
    n_dropped_rows: int = 0
    n_imputed_values: int = 0
    dropped: tuple[DroppedFeature, ...] = ()
    notes: list[str] = field(default_factory=list)
    cov_type: str = "nonrobust"
    use_t: bool = True
    df_inference: int | None = None
    n_groups: tuple[int, ...] = ()
    group_names: tuple[str, ...] = ()
    weights_name: str | None = None
    sum_log_weights: float = 0.0
    residual_sample: ResidualSample | None = field(default=None, repr=False)
    # What get_robustcov, get_prediction and the saved model need; not part of the result's
    # public face.
    _covariances: CovarianceBuilder | None = field(default=None, repr=False)
    _prediction: PredictionBasis | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.df_inference is None:
            self.df_inference = self.df_resid

    def __getstate__(self) -> dict:
        # The covariance builder holds the data's passes: not something to pickle.
        return {**self.__dict__, "_covariances": None}

    # -- inference ------------------------------------------------------------------

    @cached_property
    def _stderr_all(self) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            return np.sqrt(np.diag(self.covariance))

    @property
    def stderr(self) -> np.ndarray:
        """Standard errors of ``coef``."""
        return self._stderr_all[int(self.has_intercept) :]

    @property
    def intercept_stderr(self) -> float:
        return float(self._stderr_all[0]) if self.has_intercept else float("nan")

    @property
    def params(self) -> np.ndarray:
        """Intercept (when fitted) followed by the coefficients, as in statsmodels."""
        return np.concatenate([[self.intercept], self.coef]) if self.has_intercept else self.coef

    @property
    def param_names(self) -> tuple[str, ...]:
        """Names of ``params``: ``"intercept"`` first when fitted, then the features."""
        return ("intercept",) * int(self.has_intercept) + self.feature_names

    @property
    def bse(self) -> np.ndarray:
        return self._stderr_all

    @cached_property
    def _tvalues_all(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.params / self.bse

    @property
    def tvalues(self) -> np.ndarray:
        """t (or z, without ``use_t``) statistics of ``coef``."""
        return self._tvalues_all[int(self.has_intercept) :]

    @cached_property
    def _pvalues_all(self) -> np.ndarray:
        t = self._tvalues_all
        # Undefined without a residual degree of freedom: no need to import scipy.special
        # (which is used rather than scipy.stats, whose import adds 0.4 s to every start).
        if np.all(np.isnan(t)) or (self.use_t and not self.df_inference > 0):
            return np.full(t.shape, np.nan)
        if self.use_t:
            return 2.0 * special().stdtr(self.df_inference, -np.abs(t))
        return 2.0 * special().ndtr(-np.abs(t))

    @property
    def pvalues(self) -> np.ndarray:
        return self._pvalues_all[int(self.has_intercept) :]

    def conf_int(self, alpha: float = 0.05, *, include_intercept: bool = False) -> np.ndarray:
        """(d, 2) confidence intervals for ``coef`` at level 1 - alpha.

        With ``include_intercept=True`` the intercept's interval comes first, as for
        ``params``.
        """
        half = critical_value(alpha, self.df_inference, self.use_t) * self.bse
        intervals = np.column_stack([self.params - half, self.params + half])
        return intervals if include_intercept else intervals[int(self.has_intercept) :]

    def table(self) -> list[tuple[str, float, float, float, float, float, float]]:
        """(name, coef, stderr, t, p, ci_low, ci_high) per parameter, intercept first."""
        ci = self.conf_int(include_intercept=True)
        return [
            (name, *(float(v) for v in values))
            for name, *values in zip(
                self.param_names,
                self.params,
                self.bse,
                self._tvalues_all,
                self._pvalues_all,
                ci[:, 0],
                ci[:, 1],
                strict=True,
            )
        ]

    @property
    def resid_std(self) -> float:
        return float(np.sqrt(self.sse / self.df_resid)) if self.df_resid > 0 else float("nan")

    @property
    def scale(self) -> float:
        """Residual variance σ² = SSE / df_resid (statsmodels' ``scale``)."""
        return self.sse / self.df_resid if self.df_resid > 0 else float("nan")

    @property
    def rsquared(self) -> float:
        """1 - SSE/SST, SST centered with an intercept and uncentered (Σy²) without one."""
        return 1.0 - self.sse / self.sst if self.sst > 0 else float("nan")

    @property
    def df_model(self) -> int:
        """Fitted parameters besides the intercept."""
        return self.n_obs - self.df_resid - int(self.has_intercept)

    @property
    def rsquared_adj(self) -> float:
        """1 - (n - k_const)/df_resid · (1 - R²), as statsmodels."""
        if self.df_resid <= 0:
            return float("nan")
        return 1.0 - (self.n_obs - int(self.has_intercept)) / self.df_resid * (1 - self.rsquared)

    @cached_property
    def _overall_test(self) -> RestrictionTest | None:
        """All coefficients but the intercept zero: the classical F from the sums of
        squares, or a Wald F with a robust covariance."""
        if self.df_model <= 0 or self.df_resid <= 0:
            return None
        if self.cov_type == "nonrobust":
            # An exact fit (SSE 0, as exact refinement finds it) has F = inf and p = 0,
            # unless there was nothing to explain (a constant target): NaN.
            explained = (self.sst - self.sse) / self.df_model
            if self.sse > 0:
                f = explained / (self.sse / self.df_resid)
            else:
                f = float("inf") if explained > 0 else float("nan")
            p = float(special().fdtrc(self.df_model, self.df_resid, f))
            return RestrictionTest(float(f), p, self.df_model, self.df_resid, "F", ())
        offset = int(self.has_intercept)
        kept = [j + offset for j in range(self.coef.size) if np.isfinite(self.bse[j + offset])]
        if not kept:
            return None
        R = np.eye(self.params.size)[kept]
        return restriction_test(
            self.params,
            self.covariance,
            R,
            np.zeros(len(kept)),
            use_f=True,
            df_denom=self.df_inference,
            text=(),
            names=self.param_names,
            reduced_rank=True,
        )

    @property
    def undefined_figures(self) -> dict[str, str]:
        """Why each undefined figure of the fit is so, by attribute name (of ``rsquared``,
        ``rsquared_adj``, ``resid_std``, ``fvalue``, ``f_pvalue`` when NaN; ``llf``,
        ``aic``, ``bic`` when infinite): the summary prints the reason in place of a NaN,
        and JSON holds it beside the null."""
        nothing_to_explain = "the target is constant" if self.has_intercept else "the target is 0"
        if self.sst <= 0 and self.df_resid > 0:
            because = nothing_to_explain
        elif self.df_resid <= 0:
            because = "no residual degrees of freedom"
        elif self.df_model <= 0:
            because = "no coefficient besides the intercept"
        else:
            because = "see the notes"
        figures = {
            "rsquared": self.rsquared,
            "rsquared_adj": self.rsquared_adj,
            "resid_std": self.resid_std,
            "fvalue": self.fvalue,
            "f_pvalue": self.f_pvalue,
        }
        reasons = {
            name: nothing_to_explain if name == "rsquared" else because
            for name, value in figures.items()
            if np.isnan(value)
        }
        if self.sse <= 0:  # JSON writes their infinities as null too
            unbounded = "the residuals are zero: the likelihood is unbounded"
            reasons.update(dict.fromkeys(("llf", "aic", "bic"), unbounded))
        return reasons

    @property
    def f_df_num(self) -> int:
        """Restrictions the overall F tests: ``df_model``, or fewer when a robust covariance
        is of lower rank (fewer clusters than coefficients), as in statsmodels."""
        test = self._overall_test
        return self.df_model if test is None else test.df_num

    @property
    def fvalue(self) -> float:
        """F statistic of "every coefficient but the intercept is 0" (a Wald F with a
        robust covariance, as statsmodels)."""
        test = self._overall_test
        return float("nan") if test is None else test.statistic

    @property
    def f_pvalue(self) -> float:
        test = self._overall_test
        return float("nan") if test is None else test.pvalue

    @property
    def llf(self) -> float:
        """Gaussian log-likelihood at the fit (with weights, + ½ Σ log w, as statsmodels)."""
        n = self.n_obs
        if self.sse <= 0:
            return float("inf")
        return -n / 2 * (np.log(2 * np.pi) + np.log(self.sse / n) + 1) + self.sum_log_weights / 2

    @property
    def aic(self) -> float:
        return -2 * self.llf + 2 * (self.df_model + int(self.has_intercept))

    @property
    def bic(self) -> float:
        return -2 * self.llf + np.log(self.n_obs) * (self.df_model + int(self.has_intercept))

    @property
    def condition_number(self) -> float:
        """Condition number of the design as given (``[1, X]``, weighted for WLS): the
        "Cond. No." statsmodels prints, of the columns fitted (those left out as collinear,
        ``dropped``, would make it that of a nearly singular design). The solver's own,
        after centering and scaling, is ``certificate.condition_number``."""
        return self.certificate.condition_number_raw

    def wald_test(
        self, restrictions: str | Sequence[str], *, use_f: bool | None = None
    ) -> RestrictionTest:
        """Wald test of linear restrictions such as ``"x1 = x2, x3 = 0"`` with this
        result's covariance: χ², or F when ``use_f`` (default: ``use_t``), as statsmodels.

        Examples
        --------
        >>> import numpy as np, stablefit
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(100, 2))
        >>> result = stablefit.fit(X, X @ [1.0, 1.0] + rng.normal(size=100))
        >>> result.wald_test("x0 = x1").pvalue > 0.05
        True
        """
        R, q, text = parse_restrictions(restrictions, self.param_names)
        return restriction_test(
            self.params,
            self.covariance,
            R,
            q,
            use_f=self.use_t if use_f is None else use_f,
            df_denom=self.df_inference,
            text=text,
            names=self.param_names,
        )

    def f_test(self, restrictions: str | Sequence[str]) -> RestrictionTest:
        """F test of linear restrictions (``"x1 = x2"``, ``"x3 = 0"``) with this result's
        covariance, on (rows, ``df_inference``) degrees of freedom."""
        return self.wald_test(restrictions, use_f=True)

    def get_robustcov(
        self, cov_type: str = "HC1", *, groups: Any = None, use_t: bool | None = None
    ) -> FitResult:
        """The same fit with another covariance type (statsmodels' ``get_robustcov_results``).

        No refit: the coefficients stay as they are. What the fit's passes gathered serves
        at once (HC0 and HC1 from either; HC2 and HC3 from either of them; the clusters the
        fit was given); anything else costs one pass over the data.

        Parameters
        ----------
        cov_type : {"nonrobust", "HC0", "HC1", "HC2", "HC3", "cluster"}
        groups : array-like or column name(s), optional
            Cluster keys for ``"cluster"`` other than the fit's.
        use_t : bool, optional
            Default: this result's.
        """
        if self._covariances is None:
            raise StablefitInputError(
                "this result has no data to compute another covariance from (it was "
                "pickled or built by hand): fit again with cov_type= set"
            )
        covariance = self._covariances.covariance(cov_type, groups)
        use_t = self.use_t if use_t is None else bool(use_t)
        notes = [
            text
            for text in (note.split("] ", 1)[-1] for note in self.notes)
            if not text.startswith(COVARIANCE_NOTE_PREFIXES)
        ]
        full = self._full_covariance(covariance.matrix)
        notes += covariance_notes(covariance, use_t, full, self.param_names)
        prediction = None
        if self._prediction is not None:
            prediction = dataclasses.replace(
                self._prediction, centered_covariance=covariance.centered, use_t=use_t
            )
        return dataclasses.replace(
            self,
            covariance=full,
            cov_type=covariance.cov_type,
            use_t=use_t,
            df_inference=covariance.df_inference,
            n_groups=covariance.n_groups,
            group_names=covariance.group_names,
            notes=number_notes(notes),
            _prediction=prediction,
        )

    def _full_covariance(self, kept_matrix: np.ndarray) -> np.ndarray:
        offset = int(self.has_intercept)
        kept = list(range(offset)) + [
            j + offset
            for j in range(self.coef.size)
            if self.feature_names[j] not in {d.name for d in self.dropped}
        ]
        full = np.full((self.params.size, self.params.size), np.nan)
        full[np.ix_(kept, kept)] = kept_matrix
        return full

    # -- use ------------------------------------------------------------------------

    def predict(self, X: Any) -> np.ndarray:
        """Predictions for the rows of X: an array (n, d) of the features in the fitted
        order, or a table (pandas, polars, Arrow) holding them by name, in any order."""
        X = self._features(X)
        if self._prediction is not None:
            predicted = self._prediction.mean(X, self.coef)
        else:
            with np.errstate(invalid="ignore", over="ignore"):
                predicted = X @ self.coef + self.intercept
        warn_if_undefined(X, predicted)
        return predicted

    def _features(self, X: Any) -> np.ndarray:
        from stablefit.io.sources import table_features

        by_name = table_features(X, self.feature_names)
        X = np.asarray(X, dtype=np.float64) if by_name is None else by_name
        if X.ndim == 1:
            X = X[:, None] if self.coef.size == 1 else X[None, :]
        if X.ndim != 2 or X.shape[1] != self.coef.size:
            raise StablefitInputError(
                f"X has shape {X.shape}; this model expects {self.coef.size} columns "
                f"({', '.join(self.feature_names)})"
            )
        return X

    def get_prediction(self, X: Any, *, weights: Any = None) -> Prediction:
        """Predicted means with standard errors, confidence and prediction intervals.

        ``.summary_frame(alpha)`` gives statsmodels' columns (mean, mean_se,
        mean_ci_lower, mean_ci_upper, obs_ci_lower, obs_ci_upper). ``weights`` are those of
        the new observations, one or one per row (WLS: a new observation's variance is
        σ²/weight, as statsmodels' ``get_prediction(weights=)``); without them each row
        takes weight 1, with a warning after a weighted fit.

        Examples
        --------
        >>> import numpy as np, stablefit
        >>> X = np.arange(10.0)[:, None]
        >>> result = stablefit.fit(X, 2 * X[:, 0] + np.sin(X[:, 0]))
        >>> frame = result.get_prediction([[3.0], [20.0]]).columns(alpha=0.1)
        >>> bool(frame["obs_ci_upper"][1] > frame["mean_ci_upper"][1])
        True
        """
        if self._prediction is None:
            raise StablefitInputError("this result has no covariance to predict intervals from")
        X = self._features(X)
        prediction = predict_with_intervals(X, self.coef, self._prediction, weights)
        warn_if_undefined(X, prediction.predicted, prediction.se_obs)
        return prediction

    def to_dict(self) -> dict:
        """JSON-ready: feature names as keys, NaN written as null and explained in notes."""
        ci = self.conf_int()

        def number(value: float) -> float | None:
            return float(value) if np.isfinite(value) else None

        features = {
            name: {
                "coef": float(self.coef[j]),
                "stderr": number(self.stderr[j]),
                "t": number(self.tvalues[j]),
                "p": number(self.pvalues[j]),
                "ci95": [number(ci[j, 0]), number(ci[j, 1])],
                "digits": self.certificate.digits_per_coef[j + int(self.has_intercept)],
            }
            for j, name in enumerate(self.feature_names)
        }
        intercept_ci = self.conf_int(include_intercept=True)[0]
        return {
            "target": self.target_name,
            "intercept": (
                {
                    "coef": self.intercept,
                    "stderr": number(self.intercept_stderr),
                    "t": number(self._tvalues_all[0]),
                    "p": number(self._pvalues_all[0]),
                    "ci95": [number(intercept_ci[0]), number(intercept_ci[1])],
                    "digits": self.certificate.digits_per_coef[0],
                }
                if self.has_intercept
                else None
            ),
            "features": features,
            "covariance": {
                "type": self.cov_type,
                "description": DESCRIPTIONS[self.cov_type],
                "use_t": self.use_t,
                "df": self.df_inference,
                "n_groups": list(self.n_groups),
                "groups": list(self.group_names),
                "matrix": [[number(v) for v in row] for row in self.covariance],
            },
            "weights": self.weights_name,
            "rsquared": number(self.rsquared),
            "rsquared_adj": number(self.rsquared_adj),
            "fvalue": number(self.fvalue),
            "f_pvalue": number(self.f_pvalue),
            "f_df_num": self.f_df_num,
            "undefined": self.undefined_figures,
            "llf": number(self.llf),
            "aic": number(self.aic),
            "bic": number(self.bic),
            "condition_number": number(self.condition_number),
            "resid_std": number(self.resid_std),
            "sse": self.sse,
            "n_obs": self.n_obs,
            "df_model": self.df_model,
            "df_resid": self.df_resid,
            "n_dropped_rows": self.n_dropped_rows,
            "n_imputed_values": self.n_imputed_values,
            "dropped_features": {d.name: d.relation for d in self.dropped},
            "certificate": self.certificate.to_dict(),
            "notes": list(self.notes),
        }

    def to_model(self) -> LinearModel:
        """The fitted equation, to save as JSON and predict with later (with what
        prediction intervals need)."""
        return LinearModel(
            self.feature_names,
            self.target_name,
            self.coef.copy(),
            self.intercept,
            self._prediction,
            self.cov_type,
        )

    def summary(self) -> FitSummary:
        """The fit as text (``str()``) or HTML (``as_html()``), with numbered notes."""
        from stablefit.report.fit import FitSummary

        return FitSummary(self)

    def to_html(self) -> str:
        """The fit as one self-contained HTML page: the summary's numbers, a forest plot of
        the coefficients, the certificate and residual plots (needs matplotlib:
        ``pip install 'stablefit[plot]'``)."""
        from stablefit.report.html.fit import fit_page

        return fit_page(self)

    def _repr_html_(self) -> str:
        from stablefit.report.html.fit import fit_fragment

        return fit_fragment(self)

    def __repr__(self) -> str:
        return (
            f"FitResult(n_obs={self.n_obs}, features={list(self.feature_names)}, "
            f"cov_type={self.cov_type!r}, rsquared={self.rsquared:.6g}, "
            f"digits={self.certificate.digits})"
        )


# Notes that describe the covariance, replaced when get_robustcov changes it.
COVARIANCE_NOTE_PREFIXES = (
    "Standard errors are ",
    "HC2 is undefined",
    "HC3 is undefined",
    "The two-way clustered covariance",
    "The variance of ",
    "Cluster keys ",
)


def covariance_notes(
    covariance: Covariance, use_t: bool, full: np.ndarray, names: Sequence[str]
) -> list[str]:
    """What the covariance type means, for the numbered notes (as statsmodels prints), and
    which variances overflowed (``full``: the covariance of every parameter, NaN for those
    left out)."""
    notes = list(covariance.notes)
    variances = np.diag(full)
    overflowed = [name for name, v in zip(names, variances, strict=True) if np.isinf(v)]
    if overflowed:
        notes.append(
            f"The variance of {', '.join(map(repr, overflowed))} is beyond float64's range "
            "(above 1.8e308), so its standard error is given as inf and its t, p and interval "
            "carry no information; multiply the feature by a power of ten to get them. Its "
            "coefficient is not affected: the certificate gives its digits."
        )
    if covariance.cov_type == "nonrobust" and use_t:
        return notes
    text = f"Standard errors are {DESCRIPTIONS[covariance.cov_type]}"
    if covariance.cov_type == "cluster":
        ways = ", ".join(
            f"{count} clusters of {name!r}"
            for count, name in zip(covariance.n_groups, covariance.group_names, strict=False)
        )
        text += f", {ways}" + (" (two-way)" if len(covariance.n_groups) == 2 else "")
        if use_t:
            text += f"; t and F on {covariance.df_inference} degrees of freedom"
    text += "; p-values and intervals from the normal distribution" if not use_t else ""
    notes.append(text + ".")
    return notes


def number_notes(notes: list[str]) -> list[str]:
    return [f"[{i}] {text}" for i, text in enumerate(notes, start=1)]
