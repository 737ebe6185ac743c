"""NanGuard's overhead over plain training, beside TerminateOnNaN and LossScaleOptimizer.

A 100k x 10 regression (noise 0.1 on the target) trained by an MLP Dense(64, relu) -
Dense(64, relu) - Dense(1) with Adam. Each variant trains its own copy of the model (same
initial weights) in one ``fit`` of two epochs: the first traces the training step
(NanGuard installs its guarded step at the start of ``fit``), the second is timed
(process CPU time and wall time, from callbacks that act only at epoch boundaries). The
variants run in rotation, round after round, so drift in the machine's load reaches them
all; reported: the median over rounds of each variant's ratio to the plain run of the
same round.

Run: ``python benchmarks/bench_guard.py [--rounds 7] [--batch-sizes 32 256]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

from stablefit.keras import NanGuard

ROWS, FEATURES = 100_000, 10


def make_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((ROWS, FEATURES)).astype("float32")
    signal = np.sin(x[:, 0]) + x[:, 1:] @ rng.standard_normal(FEATURES - 1)
    y = (signal + 0.1 * rng.standard_normal(ROWS)).astype("float32")
    return x, y


def make_model(loss_scale: bool = False) -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(1),
        ]
    )
    optimizer = keras.optimizers.Adam()
    if loss_scale:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(optimizer=optimizer, loss="mse")
    return model


class EpochTimer(keras.callbacks.Callback):
    """Process CPU and wall seconds of each epoch (epoch hooks only: no per-batch cost)."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[tuple[float, float]] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = (time.process_time(), time.perf_counter())

    def on_epoch_end(self, epoch, logs=None):
        cpu, wall = self._start
        self.seconds.append((time.process_time() - cpu, time.perf_counter() - wall))


VARIANTS = {
    "no callback": (False, list),
    "NanGuard()": (False, lambda: [NanGuard()]),
    "TerminateOnNaN()": (False, lambda: [keras.callbacks.TerminateOnNaN()]),
    "LossScaleOptimizer": (True, list),
}


def second_epoch(model: keras.Model, callbacks: list, x, y, batch_size: int) -> tuple[float, float]:
    timer = EpochTimer()
    model.fit(x, y, batch_size=batch_size, epochs=2, verbose=0, callbacks=[timer, *callbacks])
    for callback in callbacks:
        for event in getattr(callback, "events", ()):
            print(f"    guard event (counted in the time): {event.describe()}")
    return timer.seconds[1]


def measure(batch_size: int, rounds: int, x, y) -> dict[str, dict[str, float]]:
    models = {name: make_model(loss_scale) for name, (loss_scale, _) in VARIANTS.items()}
    names = list(VARIANTS)
    cpu: dict[str, list[float]] = {name: [] for name in names}
    wall: dict[str, list[float]] = {name: [] for name in names}
    plain: list[tuple[float, float]] = []
    for round_number in range(rounds):
        order = names[round_number % len(names) :] + names[: round_number % len(names)]
        seconds = {}
        for name in order:
            seconds[name] = second_epoch(models[name], VARIANTS[name][1](), x, y, batch_size)
        base_cpu, base_wall = seconds["no callback"]
        plain.append(seconds["no callback"])
        for name in names:
            cpu[name].append(seconds[name][0] / base_cpu)
            wall[name].append(seconds[name][1] / base_wall)
    return {
        name: {
            "cpu": statistics.median(cpu[name]) - 1.0,
            "wall": statistics.median(wall[name]) - 1.0,
            "cpu_low": min(cpu[name]) - 1.0,
            "cpu_high": max(cpu[name]) - 1.0,
            "epoch_cpu": statistics.median(p[0] for p in plain),
            "epoch_wall": statistics.median(p[1] for p in plain),
        }
        for name in names
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 256])
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="TensorFlow's intra- and inter-op threads (default 1: on a shared machine, idle "
        "pool threads spinning for work blur process CPU time); 0 for TensorFlow's default",
    )
    args = parser.parse_args()
    if args.threads and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    warnings.simplefilter("ignore")
    x, y = make_data()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"Overhead over plain fit, {ROWS} x {FEATURES} MLP 64-64-1, Adam, backend "
        f"{keras.backend.backend()}, keras {keras.__version__}, {os.cpu_count()} CPUs, "
        f"{args.threads or 'default'} TensorFlow thread(s), "
        f"load average {load:.1f} at start; median of {args.rounds} rounds (min .. max)"
    )
    for batch_size in args.batch_sizes:
        results = measure(batch_size, args.rounds, x, y)
        first = next(iter(results.values()))
        print(
            f"batch {batch_size}: plain epoch {first['epoch_cpu']:.2f} s CPU, "
            f"{first['epoch_wall']:.2f} s wall"
        )
        for name, result in results.items():
            if name == "no callback":
                continue
            print(
                f"  {name:20s} CPU {100 * result['cpu']:+.1f}% "
                f"({100 * result['cpu_low']:+.1f}% .. {100 * result['cpu_high']:+.1f}%), "
                f"wall {100 * result['wall']:+.1f}%"
            )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average {load:.1f} at the end")


if __name__ == "__main__":
    main()
