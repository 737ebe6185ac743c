"""FitResult: the fitted linear model, its inference and its accuracy certificate."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import scipy.special

from stablefit.errors import StablefitInputError
from stablefit.model import LinearModel

if TYPE_CHECKING:
    from stablefit.report.fit import FitSummary
from stablefit.solve.certificate import Certificate
from stablefit.solve.residuals import ResidualSample


@dataclass(frozen=True)
class DroppedFeature:
    """A feature left out of the fit because other columns determine it."""

    name: str
    relation: str


@dataclass(eq=False)
class FitResult:
    """A least-squares fit in the units of the data (statsmodels-style results object).

    Coefficients of features that were left out as exactly collinear are 0 with NaN
    standard errors; ``dropped`` and ``notes`` say which and why. ``residual_sample``
    holds the residuals and leverage of a few thousand of the fitted rows, evenly spread
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
    residual_sample: ResidualSample | None = field(default=None, repr=False)

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
    def bse(self) -> np.ndarray:
        return self._stderr_all

    @cached_property
    def _tvalues_all(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.params / self.bse

    @property
    def tvalues(self) -> np.ndarray:
        return self._tvalues_all[int(self.has_intercept) :]

    @cached_property
    def _pvalues_all(self) -> np.ndarray:
        # Student's t survival function, 2·P(T > |t|); scipy.special, not scipy.stats, whose
        # import adds 0.4 s to every start.
        return 2.0 * scipy.special.stdtr(self.df_resid, -np.abs(self._tvalues_all))

    @property
    def pvalues(self) -> np.ndarray:
        return self._pvalues_all[int(self.has_intercept) :]

    def conf_int(self, alpha: float = 0.05, *, include_intercept: bool = False) -> np.ndarray:
        """(d, 2) confidence intervals for ``coef`` at level 1 - alpha.

        With ``include_intercept=True`` the intercept's interval comes first, as for
        ``params``.
        """
        if not 0.0 < alpha < 1.0:
            raise StablefitInputError(f"alpha must lie in (0, 1), got {alpha}")
        half = scipy.special.stdtrit(self.df_resid, 1.0 - alpha / 2.0) * self.bse
        intervals = np.column_stack([self.params - half, self.params + half])
        return intervals if include_intercept else intervals[int(self.has_intercept) :]

    def table(self) -> list[tuple[str, float, float, float, float, float, float]]:
        """(name, coef, stderr, t, p, ci_low, ci_high) per parameter, intercept first."""
        names = (["intercept"] if self.has_intercept else []) + list(self.feature_names)
        ci = self.conf_int(include_intercept=True)
        return [
            (name, *(float(v) for v in values))
            for name, *values in zip(
                names,
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
    def rsquared(self) -> float:
        """1 - SSE/SST, SST centered with an intercept and uncentered (Σy²) without one."""
        return 1.0 - self.sse / self.sst if self.sst > 0 else float("nan")

    # -- use ------------------------------------------------------------------------

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predictions for the rows of X (n, d), features in the fitted order."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 1:
            X = X[:, None] if self.coef.size == 1 else X[None, :]
        if X.ndim != 2 or X.shape[1] != self.coef.size:
            raise StablefitInputError(
                f"X has shape {X.shape}; this model expects {self.coef.size} columns "
                f"({', '.join(self.feature_names)})"
            )
        return X @ self.coef + self.intercept

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
        return {
            "target": self.target_name,
            "intercept": (
                {
                    "coef": self.intercept,
                    "stderr": number(self.intercept_stderr),
                    "digits": self.certificate.digits_per_coef[0],
                }
                if self.has_intercept
                else None
            ),
            "features": features,
            "rsquared": number(self.rsquared),
            "resid_std": number(self.resid_std),
            "n_obs": self.n_obs,
            "df_resid": self.df_resid,
            "n_dropped_rows": self.n_dropped_rows,
            "n_imputed_values": self.n_imputed_values,
            "dropped_features": {d.name: d.relation for d in self.dropped},
            "certificate": self.certificate.to_dict(),
            "notes": list(self.notes),
        }

    def to_model(self) -> LinearModel:
        """The fitted equation alone, to save as JSON and predict with later."""
        return LinearModel(self.feature_names, self.target_name, self.coef.copy(), self.intercept)

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
            f"rsquared={self.rsquared:.6g}, digits={self.certificate.digits})"
        )
