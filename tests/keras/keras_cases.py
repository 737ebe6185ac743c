"""Shared pieces of the Keras tests: the seed's examples and tiny real models."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras")


def seed_example_1() -> tuple[np.ndarray, np.ndarray]:
    """The seed's Example 1: two exactly collinear features, y = 10 * x1."""
    x = np.array([[1, 1_000_000], [2, 2_000_000], [3, 3_000_000]], dtype="float32")
    y = np.array([10, 20, 30], dtype="float32")
    return x, y


def seed_example_3() -> tuple[np.ndarray, np.ndarray]:
    """The seed's Example 3 without scaling: one outlier row."""
    x = np.array([[1, 10], [2, 20], [3, 30], [4, 1_000_000]], dtype="float32")
    y = np.array([10, 20, 30, 40], dtype="float32")
    return x, y


def well_conditioned(rows: int = 512, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Standard-normal features, y = x @ [1, -2, 0.5] + 3 + noise(0.1)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, 3)).astype("float32")
    y = (x @ np.array([1.0, -2.0, 0.5]) + 3.0 + 0.1 * rng.standard_normal(rows)).astype("float32")
    return x, y


def linear_model(features: int, optimizer: object, *, seed: int = 0) -> keras.Model:
    """``Dense(1)`` on ``features`` inputs, compiled with MSE, from a fixed seed."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((features,)), keras.layers.Dense(1)])
    model.compile(optimizer=optimizer, loss="mse")
    return model


def all_finite(model: keras.Model) -> bool:
    return all(np.isfinite(w).all() for w in model.get_weights())


class OneBadBatch(keras.utils.PyDataset):
    """Batches of (x, y) in order; batch ``bad_index`` has a NaN in x the first time only."""

    def __init__(self, x: np.ndarray, y: np.ndarray, *, batch_size: int, bad_index: int) -> None:
        super().__init__()
        self.x, self.y, self.batch_size, self.bad_index = x, y, batch_size, bad_index
        self.served_bad = False

    def __len__(self) -> int:
        return len(self.x) // self.batch_size

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rows = slice(index * self.batch_size, (index + 1) * self.batch_size)
        x = self.x[rows].copy()
        if index == self.bad_index and not self.served_bad:
            x[0, 0] = np.nan
            self.served_bad = True
        return x, self.y[rows]


class CorruptedBatches(keras.utils.PyDataset):
    """Batches of (x, y) in order; the batches served at the given serve counts get a NaN.

    ``corrupt`` maps the running count of batches served (0-based, across epochs) to
    ``"x"`` or ``"y"``: that batch's first row gets a NaN there, that one time only.
    ``corrupted`` lists the dataset indices of the batches that got one, in order.
    """

    def __init__(self, x, y, *, batch_size: int, corrupt: dict[int, str]) -> None:
        super().__init__()
        self.x, self.y, self.batch_size, self.corrupt = x, y, batch_size, dict(corrupt)
        self.served = 0
        self.corrupted: list[int] = []

    def __len__(self) -> int:
        return len(self.x) // self.batch_size

    def __getitem__(self, index: int):
        rows = slice(index * self.batch_size, (index + 1) * self.batch_size)
        x, y = self.x[rows].copy(), self.y[rows].copy()
        where = self.corrupt.pop(self.served, None)
        self.served += 1
        if where is not None:
            self.corrupted.append(index)
        if where == "x":
            x[0, 0] = np.nan
        elif where == "y":
            y[0] = np.nan
        return x, y


def clean_loss(model, x, y) -> float:
    """The model's loss on the clean data set (what a user compares runs by)."""
    return float(model.evaluate(x, y, batch_size=len(x), verbose=0))


class Interrupt(keras.callbacks.Callback):
    """Raises at the end of the first epoch, as another callback's failure or Ctrl-C does."""

    def on_epoch_end(self, epoch, logs=None):
        raise RuntimeError("interrupted")


def sine_data(rows: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Four standard-normal features, y = sin(2 x0) + x1 x2 + x3 / 2: an MLP's task."""
    x = np.random.default_rng(0).standard_normal((rows, 4)).astype("float32")
    return x, (np.sin(2 * x[:, 0]) + x[:, 1] * x[:, 2] + 0.5 * x[:, 3]).astype("float32")


def sine_mlp(rate: float, optimizer: type = keras.optimizers.SGD) -> keras.Model:
    """A 4-32-32-1 tanh MLP compiled with ``optimizer`` at ``rate`` and MSE, from a fixed
    seed."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(32, activation="tanh"),
            keras.layers.Dense(32, activation="tanh"),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=optimizer(rate), loss="mse")
    return model


class RateJump(keras.callbacks.Callback):
    """Sets the learning rate to 50 at one batch of one epoch: a divergence to roll back."""

    def __init__(self, epoch: int, batch: int) -> None:
        super().__init__()
        self.at, self.epoch = (epoch, batch), None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            self.model.optimizer.learning_rate.assign(50.0)


def interrupted_with_a_backup(model: keras.Model, x, y, backup: str, *callbacks) -> None:
    """One epoch of fit with a BackupAndRestore, interrupted at its end."""
    saving = keras.callbacks.BackupAndRestore(backup)
    with pytest.raises(RuntimeError, match="interrupted"):
        model.fit(x, y, batch_size=16, epochs=4, verbose=0,
                  callbacks=[saving, *callbacks, Interrupt()])  # fmt: skip
