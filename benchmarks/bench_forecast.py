"""The training forecast's cost against the Keras training it predicts.

For each case, in the same process: the median time of ``forecast_training`` (five
initialization seeds plus the recommendation search) and of the ``model.fit`` it
forecasts (a tf.keras Dense(1) model, float32, ``verbose=0``, after a warm-up fit so
tracing is excluded). Reported: both times and their ratio (Keras / forecast). Cases that
Keras would take minutes on (a million rows) are forecast only.

Run: ``python benchmarks/bench_forecast.py [--repeats 5] [--no-keras]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import numpy as np

from stablefit.diagnose.training import forecast_training
from stablefit.summary import Summary

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def data(rows: int, features: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((rows, features)) * np.logspace(0, 2, features)
    return X, X @ rng.standard_normal(features) + rng.standard_normal(rows)


# (name, rows, features, optimizer, batch size, epochs, train in Keras too)
CASES = [
    ("seed example 1, sgd, full batch", None, 2, "sgd", 32, 100, True),
    ("1k x 100, adam, full batch", 1_000, 100, "adam", 1_000, 100, True),
    ("1k x 20, adam, batch 32", 1_000, 20, "adam", 32, 100, True),
    ("10k x 10, sgd, batch 32", 10_000, 10, "sgd", 32, 10, True),
    ("10k x 10, adam, batch 32", 10_000, 10, "adam", 32, 10, True),
    ("1M x 10, sgd, batch 32", 1_000_000, 10, "sgd", 32, 100, False),
    ("1M x 10, adam, batch 32", 1_000_000, 10, "adam", 32, 100, False),
]


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def keras_fit_seconds(X, y, optimizer: str, batch_size: int, epochs: int, repeats: int) -> float:
    import keras

    def fit() -> None:
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((X.shape[1],)), keras.layers.Dense(1)])
        model.compile(optimizer=optimizer, loss="mse")
        model.fit(X, y, batch_size=batch_size, epochs=epochs, verbose=0)

    fit()  # warm-up: TensorFlow's one-time start-up cost is not the fit's
    return median_seconds(fit, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-keras", action="store_true", help="time the forecast only")
    args = parser.parse_args()
    print(f"{'case':<36} {'forecast':>10} {'keras fit':>10} {'ratio':>8}")
    for name, rows, features, optimizer, batch_size, epochs, with_keras in CASES:
        if rows is None:
            X, y = np.array([[1, 1e6], [2, 2e6], [3, 3e6]]), np.array([10.0, 20.0, 30.0])
        else:
            X, y = data(rows, features)
        summary = Summary.from_arrays(X, y)
        forecast = median_seconds(
            lambda s=summary, o=optimizer, b=batch_size, e=epochs: forecast_training(
                s, optimizer=o, batch_size=b, epochs=e
            ),
            args.repeats,
        )
        line = f"{name:<36} {forecast * 1e3:>8.1f}ms"
        if with_keras and not args.no_keras:
            X32, y32 = X.astype("float32"), y.astype("float32")
            fit = keras_fit_seconds(
                X32, y32, optimizer, batch_size, epochs, max(1, args.repeats // 2)
            )
            line += f" {fit:>9.2f}s {fit / forecast:>7.0f}x"
        print(line)


if __name__ == "__main__":
    main()
