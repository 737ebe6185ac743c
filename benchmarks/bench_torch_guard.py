"""The PyTorch guard's overhead on an MLP training step, beside ``detect_anomaly``'s.

A 50k x 10 regression trained by an MLP Linear(10, 64) - ReLU - Linear(64, 64) - ReLU -
Linear(64, 1) with Adam and ``nn.MSELoss``, in an ordinary loop (``zero_grad``, forward,
loss, ``backward``, ``step``) over shuffled batches of the in-memory tensors. One epoch
of each variant per round, the variants interleaved round after round on models of the
same initialization in the same process:

- plain: the loop as written;
- guard: ``optimizer = stablefit.torch.guard(torch.optim.Adam(...), model, loss_fn)``;
- detect_anomaly: the loop inside ``torch.autograd.detect_anomaly()``, PyTorch's own tool
  (it names the backward operation that produced a NaN, and checks every one).

Reported: per variant the median over rounds of its epoch's process-CPU and wall time as a
ratio to the plain epoch of the same round. One intra-op thread (the shared machine's
other jobs make a second one wait).

Run: ``python benchmarks/bench_torch_guard.py [--rounds 9] [--batch-sizes 256 32]``.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
import warnings

import torch

from stablefit.torch import guard

ROWS, FEATURES = 50_000, 10


def make_data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(ROWS, FEATURES, generator=generator)
    w = torch.randn(FEATURES - 1, 1, generator=generator)
    y = torch.sin(x[:, :1]) + x[:, 1:] @ w
    return x, y


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(FEATURES, 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 1),
    )


def epoch(model, optimizer, loss_fn, x, y, batch_size: int, anomaly: bool) -> tuple[float, float]:
    """Wall and process-CPU seconds of one epoch."""
    order = torch.randperm(len(x))
    batches = [
        (x[order[i : i + batch_size]], y[order[i : i + batch_size]])
        for i in range(0, len(x), batch_size)
    ]
    context = torch.autograd.detect_anomaly() if anomaly else contextlib.nullcontext()
    wall, cpu = time.perf_counter(), time.process_time()
    with context:
        for xb, yb in batches:
            optimizer.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            optimizer.step()
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(batch_size: int, rounds: int, x, y) -> dict[str, list[tuple[float, float]]]:
    loss_fn = torch.nn.MSELoss()
    runs = {}
    for name in ("plain", "guard", "detect_anomaly"):
        model = make_model()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        if name == "guard":
            optimizer = guard(optimizer, model, loss_fn, steps_per_epoch=-(-ROWS // batch_size))
        runs[name] = (model, optimizer, name == "detect_anomaly")
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for model, optimizer, anomaly in runs.values():  # warm-up
        epoch(model, optimizer, loss_fn, x[:4096], y[:4096], batch_size, anomaly)
    for _ in range(rounds):
        for name, (model, optimizer, anomaly) in runs.items():
            times[name].append(epoch(model, optimizer, loss_fn, x, y, batch_size, anomaly))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 32])
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="Anomaly Detection has been enabled")
    x, y = make_data()
    print(f"torch {torch.__version__}, {ROWS} x {FEATURES}, MLP 64-64-1, Adam, 1 thread")
    for batch_size in args.batch_sizes:
        times = measure(batch_size, args.rounds, x, y)
        plain = times["plain"]
        wall = statistics.median(w for w, _ in plain)
        cpu = statistics.median(c for _, c in plain)
        print(f"batch {batch_size}: plain epoch {wall:.2f} s wall, {cpu:.2f} s CPU (median)")
        for name in ("guard", "detect_anomaly"):
            wall_ratio = statistics.median(
                w / p[0] for (w, _), p in zip(times[name], plain, strict=True)
            )
            cpu_ratio = statistics.median(
                c / p[1] for (_, c), p in zip(times[name], plain, strict=True)
            )
            ratios = ", ".join(
                f"{c / p[1]:.3f}" for (_, c), p in zip(times[name], plain, strict=True)
            )
            print(
                f"  {name:<15} CPU {100 * (cpu_ratio - 1):+.1f}%, "
                f"wall {100 * (wall_ratio - 1):+.1f}%  (per-round CPU ratios: {ratios})"
            )


if __name__ == "__main__":
    main()
