"""The covariance types of a fit (``cov_type=``, ``--cov-type``): which standard errors,
tests and intervals it reports. The computations are in :mod:`stablefit.solve.covariance`."""

from __future__ import annotations

from stablefit.errors import StablefitInputError

COV_TYPES = ("nonrobust", "HC0", "HC1", "HC2", "HC3", "cluster")
DESCRIPTIONS = {
    "nonrobust": "classical (errors with constant variance)",
    "HC0": "heteroskedasticity-robust HC0 (White)",
    "HC1": "heteroskedasticity-robust HC1 (n/(n-k) · HC0; Stata's robust)",
    "HC2": "heteroskedasticity-robust HC2 (leverage-adjusted)",
    "HC3": "heteroskedasticity-robust HC3 (leverage-adjusted, jackknife-like)",
    "cluster": "cluster-robust CRV1 (Stata's vce(cluster))",
}


def normalize_cov_type(cov_type: object) -> str:
    """``"hc1"`` -> ``"HC1"``; anything that is not a covariance type is an input error."""
    for name in COV_TYPES:
        if isinstance(cov_type, str) and cov_type.strip().lower() == name.lower():
            return name
    raise StablefitInputError(
        f"cov_type={cov_type!r} is not a covariance type; use one of {', '.join(COV_TYPES)}"
    )
