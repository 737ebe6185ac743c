"""`stablefit fit` and `stablefit doctor` on a large CSV, against pandas.read_csv alone.

Writes a CSV of about the requested size (random well-conditioned data, 10 significant
digits per value), then times in the same process, interleaved:

- ``pandas.read_csv`` of the file (the baseline: what reading it alone costs),
- ``stablefit fit FILE --target y`` and ``stablefit doctor FILE --target y`` as
  subprocesses, with their peak memory (resident set size, Linux).

    python benchmarks/bench_csv.py --megabytes 1000
    python benchmarks/bench_csv.py --megabytes 3000 --no-pandas   # beyond the memory budget
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

COLUMNS = 20


def write_csv(path: Path, megabytes: float, seed: int = 0) -> int:
    """Write a CSV of about ``megabytes`` MB (10⁶ bytes) in chunks; return the number of rows."""
    rng = np.random.default_rng(seed)
    coef = rng.normal(size=COLUMNS)
    names = [f"x{j}" for j in range(COLUMNS)] + ["y"]
    target_bytes = megabytes * 1e6
    rows_total = 0
    with pa_csv.CSVWriter(path, pa.schema([(n, pa.float64()) for n in names])) as writer:
        written = 0
        while written < target_bytes:
            # Rows of this chunk: up to 200,000, fewer near the end, from the bytes per row
            # written so far (about 300 for 21 columns of 10 significant digits).
            per_row = written / rows_total if rows_total else 300.0
            rows = int(min(200_000, max(1, (target_bytes - written) / per_row)))
            X = rng.normal(size=(rows, COLUMNS)) * 100
            y = X @ coef + rng.normal(size=rows)
            table = pa.table({n: np.round(c, 10) for n, c in zip(names, [*X.T, y], strict=True)})
            writer.write_table(table)
            rows_total += rows
            written = path.stat().st_size
    return rows_total


def peak_rss_of(command: list[str]) -> tuple[float, float]:
    """(seconds, peak resident megabytes) of a subprocess, from its own high-water mark.

    (``RUSAGE_CHILDREN`` would not do: a forked child starts out counting the resident
    pages of this process, which may hold a DataFrame of the whole file.)
    """
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak_kb = 0
    status = Path(f"/proc/{child.pid}/status")
    while child.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak_kb = max(peak_kb, int(line.split()[1]))
        except OSError:
            break
        time.sleep(0.01)
    return time.perf_counter() - start, peak_kb / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-pandas", action="store_true", help="skip the pandas baseline")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data.csv"
        rows = write_csv(path, args.megabytes)
        size = path.stat().st_size / 1e6
        print(f"{path.name}: {size:.0f} MB, {rows} rows x {COLUMNS + 1} columns")
        stablefit = [sys.executable, "-m", "stablefit.cli.main"]
        times: dict[str, list[float]] = {}
        peaks: dict[str, float] = {}
        for _ in range(args.repeats):
            if not args.no_pandas:
                import pandas as pd

                start = time.perf_counter()
                pd.read_csv(path)
                times.setdefault("pandas.read_csv", []).append(time.perf_counter() - start)
            for command in ("fit", "doctor"):
                seconds, peak = peak_rss_of([*stablefit, command, str(path), "--target", "y"])
                times.setdefault(f"stablefit {command}", []).append(seconds)
                peaks[f"stablefit {command}"] = peak
        baseline = statistics.median(times["pandas.read_csv"]) if not args.no_pandas else None
        for name, values in times.items():
            seconds = statistics.median(values)
            ratio = f"{seconds / baseline:.2f}x read_csv" if baseline else ""
            peak = f"peak RSS {peaks[name]:.0f} MB" if name in peaks else ""
            runs = ", ".join(f"{value:.2f}" for value in values)
            print(f"{name:<18} {seconds:8.2f} s  {ratio:>16}  {peak:<18} runs: {runs} s")


if __name__ == "__main__":
    main()
