"""NanGuard's overhead over plain training, beside TerminateOnNaN and LossScaleOptimizer.

A 100k x 10 regression (noise 0.1 on the target) trained by an MLP Dense(64, relu) -
Dense(64, relu) - Dense(1) with Adam. Each variant trains its own copy of the model (same
initial weights). The variants are interleaved step by step, the order rotating from step
to step, so that load from other jobs on a shared machine falls on all of them alike: the
loop is Keras's own ``fit`` loop for TensorFlow (``CallbackList`` hooks around
``model.train_function`` on a dataset iterator), run for all variants at once. A round is
one epoch of every variant (its steps and its epoch hooks, timed in process CPU and wall
time); reported: the median over rounds of each variant's epoch as a ratio to the plain
epoch of the same round, and a second plain copy as a control of the method.

LossScaleOptimizer (in float32) is the floor of any guard that works inside the step: it
only tests the gradients for NaN/inf and applies the update under that condition.

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


VARIANTS = {
    "no callback": (False, list),
    "no callback (control)": (False, list),
    "NanGuard()": (False, lambda: [NanGuard()]),
    "TerminateOnNaN()": (False, lambda: [keras.callbacks.TerminateOnNaN()]),
    "LossScaleOptimizer": (True, list),
}


def start(names: list[str], batch_size: int, steps: int, rounds: int) -> dict[str, tuple]:
    """Each variant's model and callbacks, begun as ``fit`` begins them, traced and warm."""
    runs = {}
    for name in names:
        loss_scale, callbacks = VARIANTS[name]
        model = make_model(loss_scale)
        hooks = keras.callbacks.CallbackList(
            callbacks(), add_history=True, model=model, verbose=0, epochs=rounds, steps=steps
        )
        model.make_train_function()
        hooks.on_train_begin()
        runs[name] = (model, hooks)
    return runs


def one_epoch(runs: dict[str, tuple], epoch: int, x, y, batch_size: int) -> dict[str, tuple]:
    """(CPU, wall) seconds of one epoch of every variant, interleaved step by step."""
    import tensorflow as tf

    names = list(runs)
    iterators = {
        name: iter(tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)) for name in names
    }
    spent = dict.fromkeys(names, (0.0, 0.0))
    last_logs: dict[str, dict] = {name: {} for name in names}

    def timed(action, name: str, *args) -> None:
        cpu, wall = time.process_time(), time.perf_counter()
        action(name, *args)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        spent[name] = (spent[name][0] + cpu, spent[name][1] + wall)

    def begin(name: str) -> None:
        model, hooks = runs[name]
        model.reset_metrics()
        hooks.on_epoch_begin(epoch)

    def step(name: str, index: int) -> None:
        model, hooks = runs[name]
        hooks.on_train_batch_begin(index)
        last_logs[name] = model.train_function(iterators[name])
        hooks.on_train_batch_end(index, last_logs[name])

    def end(name: str) -> None:
        model, hooks = runs[name]
        hooks.on_epoch_end(epoch, dict(model._get_metrics_result_or_logs(last_logs[name])))

    for name in names:
        timed(begin, name)
    steps = -(-len(x) // batch_size)
    for index in range(steps):
        turn = index % len(names)
        for name in names[turn:] + names[:turn]:
            timed(step, name, index)
    for name in names:
        timed(end, name)
    return spent


def measure(batch_size: int, rounds: int, x, y) -> dict[str, dict[str, float]]:
    names = list(VARIANTS)
    steps = -(-len(x) // batch_size)
    runs = start(names, batch_size, steps, rounds + 1)
    one_epoch(runs, 0, x[: 50 * batch_size], y[: 50 * batch_size], batch_size)  # warm-up
    seconds = [one_epoch(runs, epoch + 1, x, y, batch_size) for epoch in range(rounds)]
    for _, hooks in runs.values():
        hooks.on_train_end()
        for callback in hooks.callbacks:
            for event in getattr(callback, "events", ()):
                print(f"    guard event (counted in the time): {event.describe()}")
    plain = [s["no callback"] for s in seconds]
    results = {}
    for name in names:
        cpu = [s[name][0] / s["no callback"][0] for s in seconds]
        wall = [s[name][1] / s["no callback"][1] for s in seconds]
        results[name] = {
            "cpu": statistics.median(cpu) - 1.0,
            "wall": statistics.median(wall) - 1.0,
            "cpu_low": min(cpu) - 1.0,
            "cpu_high": max(cpu) - 1.0,
            "epoch_cpu": statistics.median(p[0] for p in plain),
            "epoch_wall": statistics.median(p[1] for p in plain),
        }
    return results


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
    if keras.backend.backend() != "tensorflow":
        raise SystemExit(
            "bench_guard.py drives Keras's fit loop for TensorFlow step by step: run it with "
            f"KERAS_BACKEND=tensorflow (this is {keras.backend.backend()!r})"
        )
    if args.threads:
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
