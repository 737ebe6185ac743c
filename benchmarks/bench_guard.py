"""NanGuard's overhead as a fraction of epoch time, beside TerminateOnNaN's.

A 100k x 10 regression trained by an MLP Dense(64, relu) - Dense(64, relu) - Dense(1)
with Adam, one epoch per ``fit`` call, alternating runs with and without the guard on the
same model in the same process (so both share the traced training step and the machine's
state at that moment). Reported: the median of the per-pair ratios (guarded / plain),
for each batch size and guard setting.

Run: ``python benchmarks/bench_guard.py [--repeats 7] [--batch-sizes 256 32]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

from stablefit.keras import NanGuard

ROWS, FEATURES = 100_000, 10


def make_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((ROWS, FEATURES)).astype("float32")
    y = (np.sin(x[:, 0]) + x[:, 1:] @ rng.standard_normal(FEATURES - 1)).astype("float32")
    return x, y


def make_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer="adam", loss="mse")
    return model


def epoch_seconds(
    model: keras.Model, x, y, batch_size: int, callbacks: list
) -> tuple[float, float]:
    """Wall and process-CPU seconds of one epoch."""
    wall, cpu = time.perf_counter(), time.process_time()
    model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, callbacks=callbacks)
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(batch_size: int, make_callback, repeats: int, x, y) -> dict:
    model = make_model()
    epoch_seconds(model, x, y, batch_size, [])  # trace the training step once
    wall_ratios, cpu_ratios, plain_times = [], [], []
    for pair in range(repeats):
        callback = make_callback()
        # Alternate which run goes first so drift in the machine's load cancels out.
        if pair % 2 == 0:
            plain = epoch_seconds(model, x, y, batch_size, [])
            guarded = epoch_seconds(model, x, y, batch_size, [callback])
        else:
            guarded = epoch_seconds(model, x, y, batch_size, [callback])
            plain = epoch_seconds(model, x, y, batch_size, [])
        if getattr(callback, "events", None):
            raise RuntimeError(f"the benchmark's training went non-finite: {callback.events}")
        wall_ratios.append(guarded[0] / plain[0])
        cpu_ratios.append(guarded[1] / plain[1])
        plain_times.append(plain[0])
    return {
        "epoch_seconds": statistics.median(plain_times),
        "wall_overhead": statistics.median(wall_ratios) - 1.0,
        "cpu_overhead": statistics.median(cpu_ratios) - 1.0,
        "cpu_quartiles": [q - 1.0 for q in statistics.quantiles(cpu_ratios, n=4)],
    }


def guard_seconds_per_batch(batches: int = 20_000) -> float:
    """The guard's own work per batch (loss check, amortized snapshot), called directly."""
    model = make_model()
    x, y = make_data()
    model.fit(x[:256], y[:256], verbose=0)  # builds the optimizer's variables
    guard = NanGuard()
    guard.set_model(model)
    guard.set_params({"epochs": 1, "steps": batches})
    guard.on_train_begin()
    guard.on_epoch_begin(0)
    start = time.perf_counter()
    for batch in range(batches):
        guard.on_train_batch_begin(batch)
        guard.on_train_batch_end(batch, {"loss": 1.0})
    elapsed = time.perf_counter() - start
    guard.on_train_end()
    return elapsed / batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 32])
    args = parser.parse_args()
    x, y = make_data()
    # TerminateOnNaN is the reference: any callback with a per-batch hook costs Keras its
    # asynchronous callback dispatch, whatever the hook does.
    settings = {
        "NanGuard()": NanGuard,
        "NanGuard(snapshot_every=1)": lambda: NanGuard(snapshot_every=1),
        "TerminateOnNaN()": keras.callbacks.TerminateOnNaN,
    }
    print(
        f"Overhead over plain fit, {ROWS} x {FEATURES} MLP 64-64-1, Adam, median of "
        f"{args.repeats} interleaved pairs (keras {keras.__version__}, "
        f"{os.cpu_count()} CPUs); CPU = process CPU time, less sensitive to other load"
    )
    per_batch = guard_seconds_per_batch()
    print(f"NanGuard's own work per batch (direct calls, defaults): {1e6 * per_batch:.1f} us")
    for batch_size in args.batch_sizes:
        for label, make_callback in settings.items():
            result = measure(batch_size, make_callback, args.repeats, x, y)
            low, _, high = result["cpu_quartiles"]
            steps = -(-ROWS // batch_size)
            own = 100 * per_batch * steps / result["epoch_seconds"]
            print(
                f"batch {batch_size:4d}  {label:27s} epoch {result['epoch_seconds']:.2f} s  "
                f"overhead: CPU {100 * result['cpu_overhead']:+.1f}% "
                f"(quartiles {100 * low:+.1f}% .. {100 * high:+.1f}%), "
                f"wall {100 * result['wall_overhead']:+.1f}%"
                + (f"; NanGuard's own work {own:.1f}%" if label == "NanGuard()" else "")
            )


if __name__ == "__main__":
    main()
