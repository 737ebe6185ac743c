"""Robust and clustered standard errors: stablefit against statsmodels, 1e6 rows × 50.

Each case fits the same data both ways, interleaved (stablefit, statsmodels, stablefit,
...), and reports the median time of each and their ratio, with the largest relative
difference between the two sets of standard errors. statsmodels is timed from the
design matrix it needs (``add_constant``) to its standard errors; stablefit from the
arrays to its result's standard errors. The data are heteroskedastic (noise growing with
the first feature) with features of different scales and offsets, in 1,000 clusters of
unequal size.

stablefit's rows: "nonrobust" is the classical fit, for the cost of the robust types
beside it; HC0/HC1 and the clusters are gathered in the same refinement pass, HC2/HC3
add a triangular solve per block for the leverages.

    python benchmarks/bench_robust.py                  # 1e6 x 50, 3 runs each
    python benchmarks/bench_robust.py --rows 200000    # quicker
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np


def problem(rows: int, cols: int, clusters: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, cols)) * rng.uniform(0.1, 100, cols) + rng.normal(size=cols) * 50
    noise = rng.normal(size=rows) * (1 + np.abs(X[:, 0] - X[:, 0].mean()) / X[:, 0].std())
    y = X @ rng.normal(size=cols) + 3.0 + noise
    # Unequal clusters: sizes drawn from a skewed distribution.
    groups = np.minimum((rng.pareto(1.5, rows) * clusters / 20).astype(np.int64), clusters - 1)
    return X, y, groups


def timed(function: Callable[[], np.ndarray]) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    value = function()
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--cols", type=int, default=50)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import statsmodels.api as sm

    import stablefit

    X, y, groups = problem(args.rows, args.cols, args.clusters)
    print(f"{args.rows} rows x {args.cols} features, {np.unique(groups).size} clusters")
    stablefit.fit(X[:20000], y[:20000], groups=groups[:20000])  # compile and load once

    def ours(cov_type: str) -> Callable[[], np.ndarray]:
        keys = groups if cov_type == "cluster" else None
        return lambda: stablefit.fit(X, y, cov_type=cov_type, groups=keys).bse

    def theirs(cov_type: str) -> Callable[[], np.ndarray]:
        options = {"groups": groups} if cov_type == "cluster" else None

        def run() -> np.ndarray:
            design = sm.add_constant(X, has_constant="add")
            return np.asarray(sm.OLS(y, design).fit(cov_type=cov_type, cov_kwds=options).bse)

        return run

    for cov_type in ("nonrobust", "HC1", "cluster", "HC3"):
        times: dict[str, list[float]] = {"stablefit": [], "statsmodels": []}
        values = {}
        for _ in range(args.repeats):
            for name, function in (
                ("stablefit", ours(cov_type)),
                ("statsmodels", theirs(cov_type)),
            ):
                seconds, values[name] = timed(function)
                times[name].append(seconds)
        ours_s, theirs_s = (statistics.median(times[n]) for n in ("stablefit", "statsmodels"))
        difference = np.max(np.abs(values["stablefit"] / values["statsmodels"] - 1))
        runs = ", ".join(f"{t:.2f}" for t in times["stablefit"])
        their_runs = ", ".join(f"{t:.2f}" for t in times["statsmodels"])
        print(
            f"{cov_type:>9}: stablefit {ours_s:6.2f} s ({runs})   statsmodels {theirs_s:6.2f} s "
            f"({their_runs})   statsmodels/stablefit {theirs_s / ours_s:5.1f}x   "
            f"max rel. diff. of std. errors {difference:.1e}"
        )


if __name__ == "__main__":
    main()
