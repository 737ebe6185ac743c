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

FILE_MB = 400
COLUMNS = 10
# What reading may add to the interpreter's memory, whatever the file size: a few chunks
# in flight on the thread pool plus the Summary's sketches.
GROWTH_LIMIT_MB = 200

CHILD = textwrap.dedent(
    """
    import json, sys
    import psutil
    from stablefit.io import open_source
    from stablefit.summary import summarize

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
    rows, small_growth = summarize_in_child(small)
    assert rows == small_rows
    rows, large_growth = summarize_in_child(large)
    assert rows == large_rows
    file_mb = large.stat().st_size / 2**20
    print(f"growth {small_growth:.0f} and {large_growth:.0f} MiB for {file_mb:.0f} MiB / 4 and x1")
    assert large_growth < GROWTH_LIMIT_MB
    # Four times the file, the same memory: what is in flight does not depend on the size.
    # (Loading the file would add about its own size.)
    assert large_growth - small_growth < file_mb / 8
