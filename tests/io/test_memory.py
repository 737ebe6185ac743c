"""Reading a large CSV file keeps memory bounded: the file is streamed, never loaded whole."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import numpy as np
import psutil
import pytest

FILE_MB = 800
COLUMNS = 10
# What reading may add to the memory of a process that has summarized a file before,
# whatever the file size: a few chunks and groups of batches in flight on the thread pools
# plus the Summary's sketches.
GROWTH_LIMIT_MB = 200

CHILD = textwrap.dedent(
    """
    import json, sys, tempfile
    from pathlib import Path
    import psutil
    from stablefit.io import open_source
    from stablefit.summary import summarize

    # Summarize the file's first lines first: what the libraries take once (numba's compiled
    # code, BLAS buffers) is not what reading the file adds.
    with open(sys.argv[1]) as stream, tempfile.TemporaryDirectory() as folder:
        start = Path(folder) / "start.csv"
        start.write_text("".join(next(stream) for _ in range(1000)))
        summarize(open_source(start, target="y"))
    before = psutil.Process().memory_info().rss
    summary = summarize(open_source(sys.argv[1], target="y"))
    # The high-water mark of this process image. (ru_maxrss would not do: it keeps the
    # resident size of the parent that forked us, a whole test session with Keras in it.)
    peak = None
    try:
        with open("/proc/self/status") as status:
            line = next(line for line in status if line.startswith("VmHWM:"))
        peak = int(line.split()[1]) * 1024
    except (OSError, StopIteration):
        pass
    print(json.dumps({"rows": summary.n_rows, "before": before, "peak": peak}))
    """
)


def write_large_csv(path, megabytes: int) -> int:
    """A CSV of about ``megabytes`` MB made of one random block repeated; returns its rows."""
    rng = np.random.default_rng(0)
    block = rng.standard_normal((20_000, COLUMNS))
    text = "\n".join(",".join(f"{v:.15g}" for v in row) for row in block) + "\n"
    repeats = max(1, megabytes * 10**6 // len(text))
    with path.open("w") as stream:
        stream.write(",".join([*(f"x{j}" for j in range(COLUMNS - 1)), "y"]) + "\n")
        for _ in range(repeats):
            stream.write(text)
    return repeats * block.shape[0]


def summarize_in_child(path) -> tuple[int, float]:
    """(rows, growth of the resident set in MiB) of summarizing ``path`` in a fresh process."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watched = psutil.Process(child.pid)
    polled_peak = 0
    while child.poll() is None:
        try:
            polled_peak = max(polled_peak, watched.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.005)
    output, errors = child.communicate()
    assert child.returncode == 0, errors
    report = json.loads(output)
    peak = max(polled_peak, report["peak"] or 0)
    return report["rows"], (peak - report["before"]) / 2**20


@pytest.mark.slow
def test_summarizing_a_large_csv_does_not_load_it(tmp_path):
    small, large = tmp_path / "small.csv", tmp_path / "large.csv"
    small_rows = write_large_csv(small, FILE_MB // 4)
    large_rows = write_large_csv(large, FILE_MB)
    # The peak in flight depends on how the threads happen to interleave (by 25 MiB between
    # identical runs): the lower of two runs is what the reading itself needs.
    small_runs = [summarize_in_child(small) for _ in range(2)]
    large_runs = [summarize_in_child(large) for _ in range(2)]
    assert {rows for rows, _ in small_runs} == {small_rows}
    assert {rows for rows, _ in large_runs} == {large_rows}
    small_growth = min(growth for _, growth in small_runs)
    large_growth = min(growth for _, growth in large_runs)
    print(f"growth {small_growth:.0f} and {large_growth:.0f} MiB for files of 1/4 and x1")
    assert large_growth < GROWTH_LIMIT_MB
    # Four times the file, the same memory: what is in flight does not depend on the size.
    # Holding the extra rows as float64 would add twice this.
    loaded_mb = (large_rows - small_rows) * COLUMNS * 8 / 2**20
    assert large_growth - small_growth < loaded_mb / 2
