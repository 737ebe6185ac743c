"""Each column as a report shows it: scale, missing values, collinearity and extremes.

A :class:`ColumnProfile` holds what the Summary already gathered for the checks (moments,
ranges, the rows of the first NaN and inf, the smallest and largest values with their
rows, the sketched median and MAD), so building the profiles costs no pass over the data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stablefit.diagnose.checks.collinearity import variance_inflation
from stablefit.diagnose.checks.outliers import MAD_TO_SD
from stablefit.summary import Summary


@dataclass(frozen=True, eq=False)
class ColumnProfile:
    """One column of the data (a feature or the target).

    Attributes
    ----------
    name : str
    role : {"feature", "target"}
    count, n_nan, n_inf : int
        Finite values, NaN and inf (missing cells are NaN).
    nonfinite_rows : str
        Where the first NaN and inf are, as the user numbers rows (``"lines 4, 9 and 3
        more"``); empty when there are none.
    minimum, maximum, mean, std, max_abs : float
        Over the finite values (NaN when there is none).
    median, robust_sd : float
        Sketched median and ``1.4826 · MAD`` (NaN without sketches).
    is_integer : bool
        Every finite value is a whole number.
    vif : float
        Variance inflation factor of a feature (``inf``: an exact combination of the
        others; NaN for the target, a constant or an unusable column).
    extreme_values, extreme_rows : ndarray
        The smallest and largest values the Summary kept, with their rows as the user
        numbers them (file lines for a CSV file, 0-based indices for arrays).
    robust_z : ndarray
        ``|value - median| / robust_sd`` of each extreme value (NaN when robust_sd is 0).
    leverage : ndarray
        Each extreme value's leverage in the fit on this feature alone, a lower bound for
        its leverage in the full model (NaN for the target).
    """

    name: str
    role: str
    count: int
    n_nan: int
    n_inf: int
    nonfinite_rows: str
    minimum: float
    maximum: float
    mean: float
    std: float
    max_abs: float
    median: float
    robust_sd: float
    is_integer: bool
    vif: float
    extreme_values: np.ndarray
    extreme_rows: np.ndarray
    robust_z: np.ndarray
    leverage: np.ndarray


def column_profiles(summary: Summary, *, intercept: bool = True) -> tuple[ColumnProfile, ...]:
    """A profile per column of ``summary``: the features, then the target."""
    columns, schema = summary.columns, summary.schema
    d = summary.n_features
    detailed = summary.sketches is not None and summary.n_rows > 0
    medians = summary.median() if detailed else np.full(summary.p, np.nan)
    robust_sd = MAD_TO_SD * summary.mad() if detailed else np.full(summary.p, np.nan)
    vif = np.append(variance_inflation(summary, intercept), np.full(summary.p - d, np.nan))
    profiles = []
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        std = columns.std
        for j, name in enumerate(summary.names):
            values, rows = columns.extremes[j]
            bad_rows = np.union1d(columns.nan_rows[j], columns.inf_rows[j])
            n_bad = int(columns.n_nan[j] + columns.n_inf[j])
            z = np.abs(values - medians[j]) / robust_sd[j] if robust_sd[j] > 0 else None
            leverage = None
            if j < d and columns.m2[j] > 0:
                spread = np.square(values - columns.mean[j]) / columns.m2[j]
                leverage = np.minimum(1.0 / columns.count[j] + spread, 1.0)
            profiles.append(
                ColumnProfile(
                    name=name,
                    role="feature" if j < d else "target",
                    count=int(columns.count[j]),
                    n_nan=int(columns.n_nan[j]),
                    n_inf=int(columns.n_inf[j]),
                    nonfinite_rows=schema.format_rows(bad_rows, total=n_bad) if n_bad else "",
                    minimum=float(columns.min[j]),
                    maximum=float(columns.max[j]),
                    mean=float(columns.mean[j]) if columns.count[j] else float("nan"),
                    std=float(std[j]),
                    max_abs=float(columns.max_abs[j]),
                    median=float(medians[j]),
                    robust_sd=float(robust_sd[j]),
                    is_integer=bool(columns.is_integer[j]) and columns.count[j] > 0,
                    vif=float(vif[j]),
                    extreme_values=values.copy(),
                    extreme_rows=rows + schema.row_offset,
                    robust_z=np.full(values.shape, np.nan) if z is None else z,
                    leverage=np.full(values.shape, np.nan) if leverage is None else leverage,
                )
            )
    return tuple(profiles)
