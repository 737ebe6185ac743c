"""The datasets both forecast validations train on: the seed's examples as given and
rescaled, noise, mixed scales and timestamps."""

from __future__ import annotations

import numpy as np


def example_1() -> tuple[np.ndarray, np.ndarray]:
    return np.array([[1, 1e6], [2, 2e6], [3, 3e6]]), np.array([10.0, 20.0, 30.0])


def example_3() -> tuple[np.ndarray, np.ndarray]:
    return np.array([[1, 10], [2, 20], [3, 30], [4, 1e6]]), np.array([10.0, 20.0, 30.0, 40.0])


def standardized(X: np.ndarray) -> np.ndarray:
    return (X - X.mean(axis=0)) / X.std(axis=0)


def robust(X: np.ndarray) -> np.ndarray:
    q1, median, q3 = np.percentile(X, [25, 50, 75], axis=0)
    return (X - median) / (q3 - q1)


def noisy(rows: int = 200) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    X = rng.standard_normal((rows, 3))
    return X, X @ np.array([1.5, -2.0, 0.5]) + 5.0 + 0.3 * rng.standard_normal(rows)


def mixed_scales(rows: int = 100) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(8)
    X = np.column_stack([rng.uniform(0, 1, rows), rng.uniform(500, 1500, rows)])
    return X, 3.0 * X[:, 0] + 0.01 * X[:, 1] + rng.standard_normal(rows)


def timestamps(rows: int = 50) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(9)
    t = 1.7e9 + np.sort(rng.uniform(0, 86_400, rows))
    return t[:, None], 1e-4 * (t - 1.7e9) + rng.standard_normal(rows)
