"""`stablefit fit` and `stablefit doctor` on large CSVs, against pandas.read_csv alone.

Writes CSVs of about the requested size (random well-conditioned data, 21 columns) of
two kinds: numbers rounded to 10 decimals (``-12.8534662944``), and full precision as
``pandas.to_csv``, ``numpy.savetxt`` and ``repr`` write them (17 significant digits,
``-12.853466294412345``). Then, for each file, times in the same process, interleaved:

- ``pandas.read_csv`` of the file (the baseline: what reading it alone costs),
- ``polars.read_csv`` beside it, when polars is installed,
- ``stablefit fit FILE --target y`` and ``stablefit doctor FILE --target y`` as
  subprocesses, with their peak memory (resident set size, Linux).

    python benchmarks/bench_csv.py --megabytes 1000
    python benchmarks/bench_csv.py --megabytes 3000 --no-pandas --kinds full   # beyond the cache
    python benchmarks/bench_csv.py --keep /tmp/bench-csv   # write the files once, reuse them

Without ``--keep`` the files are written to a temporary folder and deleted afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import os
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


# How each kind of file writes its values: rounded to 10 decimals, or as they are
# (pyarrow writes the shortest text that reads back the same double, as repr does).
KINDS = {"10-digit": lambda values: np.round(values, 10), "full": lambda values: values}


def write_csv(path: Path, megabytes: float, kind: str = "10-digit", seed: int = 0) -> int:
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
            columns = [KINDS[kind](c) for c in [*X.T, y]]
            table = pa.table(dict(zip(names, columns, strict=True)))
            writer.write_table(table)
            rows_total += rows
            written = path.stat().st_size
    return rows_total


def count_rows(path: Path) -> int:
    """Data rows of a CSV file written by :func:`write_csv` (its lines but the header)."""
    lines = 0
    with path.open("rb") as file:
        while block := file.read(1 << 24):
            lines += block.count(b"\n")
    return lines - 1


def csv_file(folder: Path, megabytes: float, kind: str) -> tuple[Path, int]:
    """The CSV of that size and kind in ``folder``, written unless it is there already; and
    its number of rows."""
    path = folder / f"{kind}-{megabytes:g}MB.csv"
    if path.exists():
        return path, count_rows(path)
    partial = path.with_suffix(".partial")
    rows = write_csv(partial, megabytes, kind)
    partial.replace(path)
    return path, rows


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


def readers(no_pandas: bool) -> dict[str, object]:
    """The in-process readers to time: pandas (the baseline), and polars if installed."""
    found: dict[str, object] = {}
    if not no_pandas:
        import pandas as pd

        found["pandas.read_csv"] = pd.read_csv
    try:
        import polars as pl
    except ImportError:
        return found
    found["polars.read_csv"] = pl.read_csv
    return found


def compare(path: Path, repeats: int, no_pandas: bool) -> None:
    stablefit = [sys.executable, "-m", "stablefit.cli.main"]
    times: dict[str, list[float]] = {}
    peaks: dict[str, float] = {}
    in_process = readers(no_pandas)
    for _ in range(repeats):
        for name, read in in_process.items():
            start = time.perf_counter()
            read(path)
            times.setdefault(name, []).append(time.perf_counter() - start)
        for command in ("fit", "doctor"):
            seconds, peak = peak_rss_of([*stablefit, command, str(path), "--target", "y"])
            times.setdefault(f"stablefit {command}", []).append(seconds)
            peaks[f"stablefit {command}"] = peak
    baseline = statistics.median(times["pandas.read_csv"]) if not no_pandas else None
    for name, values in times.items():
        seconds = statistics.median(values)
        ratio = f"{seconds / baseline:.2f}x read_csv" if baseline else ""
        peak = f"peak RSS {peaks[name]:.0f} MB" if name in peaks else ""
        runs = ", ".join(f"{value:.2f}" for value in values)
        print(f"{name:<18} {seconds:8.2f} s  {ratio:>16}  {peak:<18} runs: {runs} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--kinds", nargs="+", choices=sorted(KINDS), default=list(KINDS))
    parser.add_argument("--no-pandas", action="store_true", help="skip the pandas baseline")
    parser.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="write the CSVs into DIR and keep them; a later run reuses the files it finds "
        "there (of the same size and kind)",
    )
    args = parser.parse_args()
    print(f"load average before: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as folder:
        # numba compiles the kernels on the first run after an install: not timed here.
        path = Path(folder) / "warm-up.csv"
        for kind in args.kinds:
            write_csv(path, 2, kind)
            for command in ("fit", "doctor"):
                subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "stablefit.cli.main",
                        command,
                        str(path),
                        "--target",
                        "y",
                    ],
                    capture_output=True,
                    check=False,
                )
    for kind in args.kinds:
        with contextlib.ExitStack() as stack:
            if args.keep is None:
                folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            else:
                folder = args.keep
                folder.mkdir(parents=True, exist_ok=True)
            path, rows = csv_file(folder, args.megabytes, kind)
            size = path.stat().st_size / 1e6
            print(f"\n{kind} file: {size:.0f} MB, {rows} rows x {COLUMNS + 1} columns")
            compare(path, args.repeats, args.no_pandas)
    print(f"\nload average after: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
