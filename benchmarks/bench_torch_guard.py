"""The PyTorch guard's overhead on an MLP training step, beside ``detect_anomaly``'s.

A 50k x 10 regression trained by an MLP Linear(10, 64) - ReLU - Linear(64, 64) - ReLU -
Linear(64, 1) with Adam and ``nn.MSELoss``, in an ordinary loop (``zero_grad``, forward,
loss, ``backward``, ``step``) over shuffled batches of the in-memory tensors. Variants,
each its own model of the same initialization, in the same process:

- plain: the loop as written, and plain again, a second copy: the method's control;
- guard: ``optimizer = stablefit.torch.guard(torch.optim.Adam(...), model, loss_fn)``, on
  the CPU reading each step's flag and loss (its default there);
- guard sync_free: the same with ``sync_free=True``, the masked update that the guard uses
  on accelerators (no host read per step), timed here on the CPU for its cost;
- detect_anomaly: the step inside ``torch.autograd.detect_anomaly()``, PyTorch's own tool
  (it names the backward operation that produced a NaN, and checks every one);
- isfinite(loss): the check users write by hand, ``if torch.isfinite(loss):
  optimizer.step()`` (the loss only, not the gradients; one host read a step): the floor
  of any guard that decides on the host, step by step.

The variants are interleaved step by step (the order rotating from batch to batch), so
load from other jobs on a shared machine falls on all of them alike; a round is one epoch
of every variant. Reported: per variant the median over rounds of its epoch's
process-CPU and wall time as a ratio to the plain epoch of the same round. One intra-op
thread (the shared machine's other jobs make a second one wait).

Run: ``python benchmarks/bench_torch_guard.py [--rounds 7] [--batch-sizes 256 32]
[--width 64]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
import warnings

import torch

from stablefit.torch import guard

ROWS, FEATURES = 50_000, 10
VARIANTS = (
    "plain",
    "plain again",
    "guard",
    "guard sync_free",
    "detect_anomaly",
    "isfinite(loss)",
)


def make_data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(ROWS, FEATURES, generator=generator)
    w = torch.randn(FEATURES - 1, 1, generator=generator)
    y = torch.sin(x[:, :1]) + x[:, 1:] @ w
    return x, y


def make_model(width: int = 64) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(FEATURES, width),
        torch.nn.ReLU(),
        torch.nn.Linear(width, width),
        torch.nn.ReLU(),
        torch.nn.Linear(width, 1),
    )


def make_runs(batch_size: int, width: int = 64) -> dict[str, tuple]:
    runs = {}
    for name in VARIANTS:
        # A loss module of its own: a guard's hook on a shared one would run in every
        # variant's step, and charge its cost to the plain loop too.
        loss_fn = torch.nn.MSELoss()
        model = make_model(width)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        if name.startswith("guard"):
            optimizer = guard(
                optimizer,
                model,
                loss_fn,
                steps_per_epoch=-(-ROWS // batch_size),
                sync_free=name == "guard sync_free",
            )
        runs[name] = (model, optimizer, loss_fn, name == "detect_anomaly", name == "isfinite(loss)")
    return runs


def epoch(runs: dict[str, tuple], x, y, batch_size: int) -> dict[str, tuple[float, float]]:
    """Wall and process-CPU seconds of one epoch of each variant, step by step in turn."""
    order = torch.randperm(len(x))
    batches = [
        (x[order[i : i + batch_size]], y[order[i : i + batch_size]])
        for i in range(0, len(x), batch_size)
    ]
    names = list(runs)
    spent = dict.fromkeys(names, (0.0, 0.0))
    for index, (xb, yb) in enumerate(batches):
        turn = index % len(names)
        for name in names[turn:] + names[:turn]:
            model, optimizer, loss_fn, anomaly, checked = runs[name]
            context = torch.autograd.detect_anomaly() if anomaly else contextlib.nullcontext()
            wall, cpu = time.perf_counter(), time.process_time()
            with context:
                optimizer.zero_grad()
                loss = loss_fn(model(xb), yb)
                loss.backward()
                if not checked or torch.isfinite(loss):
                    optimizer.step()
                # Freed in its own step: kept, it would be freed by the next variant's
                # assignment, in that variant's time (detect_anomaly's graph, with a
                # traceback a node, in the step after it).
                del loss
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            spent[name] = (spent[name][0] + wall, spent[name][1] + cpu)
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 32])
    parser.add_argument("--width", type=int, default=64, help="the hidden layers' width")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="Anomaly Detection has been enabled")
    x, y = make_data()
    width = args.width
    print(f"torch {torch.__version__}, {ROWS} x {FEATURES}, MLP {width}-{width}-1, Adam, 1 thread")
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    for batch_size in args.batch_sizes:
        runs = make_runs(batch_size, width)
        epoch(runs, x[:4096], y[:4096], batch_size)  # warm-up
        rounds = [epoch(runs, x, y, batch_size) for _ in range(args.rounds)]
        wall = statistics.median(r["plain"][0] for r in rounds)
        cpu = statistics.median(r["plain"][1] for r in rounds)
        print(f"batch {batch_size}: plain epoch {wall:.2f} s wall, {cpu:.2f} s CPU (median)")
        steps = -(-ROWS // batch_size)
        for name in VARIANTS[1:]:
            wall_ratios = [r[name][0] / r["plain"][0] for r in rounds]
            cpu_ratios = [r[name][1] / r["plain"][1] for r in rounds]
            extra = statistics.median(r[name][1] - r["plain"][1] for r in rounds) / steps
            print(
                f"  {name:<16} CPU {100 * (statistics.median(cpu_ratios) - 1):+.1f}% "
                f"({1e6 * extra:+.0f} us a step), "
                f"wall {100 * (statistics.median(wall_ratios) - 1):+.1f}%  "
                f"(per-round CPU ratios: {', '.join(f'{c:.3f}' for c in cpu_ratios)})"
            )
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
