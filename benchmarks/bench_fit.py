"""stablefit.fit against numpy, scikit-learn and statsmodels: time and accuracy.

Time is a ratio to one ``X.T @ X`` product timed in the same process, interleaved with
the solvers; each side counts its fastest run, since these machines are shared and noisy
and interference only ever adds time. Accuracy is the log
relative error (LRE, digits) against the exact least-squares solution, known by
construction: integer data whose rows come in identical pairs with opposite noise, so
the noise is exactly orthogonal to every column and the exact solution is the integer
vector the data were made from.

    python benchmarks/bench_fit.py                 # 1e6 x 100, both problems
    python benchmarks/bench_fit.py --rows 200000   # quicker
    python benchmarks/bench_fit.py --threads 1 --solvers stablefit.fit

``--threads 1`` runs both sides on one core (one BLAS thread for the product, one worker
thread for stablefit): the ratio of the work done, which a busy machine disturbs far less
than two-thread runs (BLAS's threads wait for each other when other processes hold the
cores).
"""

from __future__ import annotations

import argparse
import contextlib
import time
import warnings
from collections.abc import Callable, Iterator

import numpy as np


def integer_design(rng: np.random.Generator, rows: int, cols: int, condition: str) -> np.ndarray:
    """Integer features, well conditioned or (``"ill"``) with a condition number ~1e10."""
    if condition == "well":
        return rng.integers(-(2**20), 2**20, size=(rows, cols)).astype(float)
    # Neighbouring columns differ by -1, 0 or 1 on a scale of 2^30: near collinear,
    # condition number ~1e10 after centering and equilibration.
    base = rng.integers(-(2**30), 2**30, size=(rows, cols // 2)).astype(float)
    noise = rng.integers(-1, 2, size=(rows, cols - cols // 2)).astype(float)
    X = np.empty((rows, cols))
    X[:, 0::2] = base
    X[:, 1::2] = base[:, : cols - cols // 2] + noise
    return X


def exact_problem(
    rows: int, cols: int, *, condition: str, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X, y, [b0, coef...]) with the exact least-squares solution known."""
    rng = np.random.default_rng(seed)
    half = rows // 2
    X = integer_design(rng, half, cols, condition)
    coef = rng.integers(-100, 101, size=cols).astype(float)
    intercept = float(rng.integers(-1000, 1001))
    signal = X @ coef + intercept
    noise = rng.integers(-(2**20), 2**20, size=half).astype(float)
    X = np.repeat(X, 2, axis=0)
    y = np.repeat(signal, 2) + np.column_stack([noise, -noise]).ravel()
    assert np.abs(y).max() < 2**53
    return X, y, np.concatenate([[intercept], coef])


def lre(estimate: np.ndarray, exact: np.ndarray) -> float:
    with np.errstate(divide="ignore"):
        errors = np.abs(estimate - exact) / np.abs(exact)
    digits = -np.log10(np.maximum(errors, 1e-17))
    return float(np.min(np.minimum(digits, 16.0)))


def solvers() -> dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]]:
    import statsmodels.api as sm
    from sklearn.linear_model import LinearRegression

    import stablefit

    def with_ones(X: np.ndarray) -> np.ndarray:
        return np.column_stack([np.ones(len(X)), X])

    return {
        "stablefit.fit": lambda X, y: stablefit.fit(X, y).params,
        "numpy.linalg.lstsq": lambda X, y: np.linalg.lstsq(with_ones(X), y, rcond=None)[0],
        "sklearn LinearRegression": lambda X, y: (
            lambda m: np.concatenate([[m.intercept_], m.coef_])
        )(LinearRegression().fit(X, y)),
        "statsmodels OLS": lambda X, y: (
            sm.OLS(y, sm.add_constant(X, has_constant="add")).fit().params
        ),
    }


@contextlib.contextmanager
def threads(count: int | None) -> Iterator[None]:
    """BLAS's threads and stablefit's workers limited to ``count`` (None: as installed)."""
    if count is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    from stablefit.parallel import task_threads

    with threadpool_limits(limits=count, user_api="blas"), task_threads(count):
        yield


def timed(function: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    value = function()
    return time.perf_counter() - start, value


def compare(
    X: np.ndarray, y: np.ndarray, exact: np.ndarray, repeats: int, names: list[str] | None
) -> dict[str, float]:
    """Time ratios (fastest run of each over the fastest X.T @ X) and LRE per solver."""
    baseline: list[float] = []
    seconds: dict[str, list[float]] = {}
    accuracy: dict[str, float] = {}
    X.T @ X  # the first product also pays for first touches of memory: not part of the baseline
    chosen = {name: solve for name, solve in solvers().items() if not names or name in names}
    for _ in range(repeats):
        for name, solve in chosen.items():
            baseline.append(timed(lambda: X.T @ X)[0])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                elapsed, estimate = timed(lambda solve=solve: solve(X, y))
            seconds.setdefault(name, []).append(elapsed)
            accuracy[name] = lre(np.asarray(estimate), exact)
    fastest = min(baseline)
    print(f"X.T @ X: {fastest:.3f} s (fastest of {len(baseline)})")
    print(f"{'solver':<26} {'time / (X.T @ X)':>18} {'LRE (digits)':>13}")
    for name, values in seconds.items():
        print(f"{name:<26} {min(values) / fastest:>18.2f} {accuracy[name]:>13.1f}")
    return {name: min(values) / fastest for name, values in seconds.items()}


def run(rows: int, cols: int, repeats: int, names: list[str] | None) -> None:
    for condition in ("well", "ill"):
        X, y, exact = exact_problem(rows, cols, condition=condition)
        print(f"\n{condition}-conditioned problem, {rows} x {cols}")
        compare(X, y, exact, repeats, names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--cols", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="BLAS threads and workers")
    parser.add_argument(
        "--solvers", nargs="+", default=None, help="names as printed (default: all)"
    )
    args = parser.parse_args()
    with threads(args.threads):
        run(args.rows, args.cols, args.repeats, args.solvers)


if __name__ == "__main__":
    main()
