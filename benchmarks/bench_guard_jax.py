"""NanGuard's overhead on Keras's JAX backend, beside TerminateOnNaN and LossScaleOptimizer.

The model and data of ``bench_guard.py`` (100k x 10 rows, MLP 64-64-1, Adam). Keras's JAX
fit loop keeps the training state outside the model between steps, so the variants are not
interleaved step by step as there: each trains its own copy of the model in one ``fit`` of
``--epochs`` epochs, the variants taking turns cycle by cycle (the order rotating from cycle
to cycle), and a callback listed first times each epoch in process CPU and wall time. The
first epoch of each ``fit`` holds its compilation and is left out. Reported: the median over
the cycles of each variant's median epoch as a ratio to the plain model's in the same
cycle, and a second plain copy as a control of the method.

Run: ``KERAS_BACKEND=jax python benchmarks/bench_guard_jax.py [--cycles 3] [--epochs 4]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras
from bench_guard import FEATURES, ROWS, VARIANTS, make_data, make_model


class EpochTimes(keras.callbacks.Callback):
    """Process CPU and wall seconds of each epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[tuple[float, float]] = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = (time.process_time(), time.perf_counter())

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        cpu, wall = self._start
        self.seconds.append((time.process_time() - cpu, time.perf_counter() - wall))


def one_cycle(cycle: int, x, y, batch_size: int, epochs: int) -> dict[str, tuple[float, float]]:
    """Each variant's median (CPU, wall) epoch after the first, in rotating order."""
    names = list(VARIANTS)
    turn = cycle % len(names)
    medians = {}
    for name in names[turn:] + names[:turn]:
        loss_scale, callbacks = VARIANTS[name]
        model, timer = make_model(loss_scale), EpochTimes()
        model.fit(
            x, y, batch_size=batch_size, epochs=epochs, verbose=0, callbacks=[timer, *callbacks()]
        )
        later = timer.seconds[1:]
        medians[name] = tuple(statistics.median(s[i] for s in later) for i in (0, 1))
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 256])
    args = parser.parse_args()
    if keras.backend.backend() != "jax":
        raise SystemExit(f"run with KERAS_BACKEND=jax (this is {keras.backend.backend()!r})")
    warnings.simplefilter("ignore")
    x, y = make_data()
    load = os.getloadavg()[0]
    print(
        f"Overhead over plain fit, {ROWS} x {FEATURES} MLP 64-64-1, Adam, backend jax, "
        f"keras {keras.__version__}, {os.cpu_count()} CPUs, load average {load:.1f} at start; "
        f"median of {args.cycles} cycles of {args.epochs}-epoch fits (min .. max)"
    )
    for batch_size in args.batch_sizes:
        cycles = [one_cycle(c, x, y, batch_size, args.epochs) for c in range(args.cycles)]
        plain = [c["no callback"] for c in cycles]
        print(
            f"batch {batch_size}: plain epoch {statistics.median(p[0] for p in plain):.2f} s "
            f"CPU, {statistics.median(p[1] for p in plain):.2f} s wall"
        )
        for name in VARIANTS:
            if name == "no callback":
                continue
            cpu = [c[name][0] / c["no callback"][0] - 1 for c in cycles]
            wall = [c[name][1] / c["no callback"][1] - 1 for c in cycles]
            print(
                f"  {name:22s} CPU {100 * statistics.median(cpu):+.1f}% "
                f"({100 * min(cpu):+.1f}% .. {100 * max(cpu):+.1f}%), "
                f"wall {100 * statistics.median(wall):+.1f}%"
            )
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
