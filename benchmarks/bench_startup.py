"""Start-up of the ``stablefit`` command on a 3-row file, against Python's own.

Each command runs in a fresh process, as a user runs it: ``stablefit fit`` and
``stablefit doctor`` on a 3-row CSV, and as baselines ``python -c pass`` (Python and the
site packages), ``python -c "import numpy"`` and ``python -c "import numpy, scipy.special"``
(the fit's p-values and intervals need SciPy's distribution functions: with one residual
degree of freedom, the 3-row fit has them). The baselines load their BLAS with one thread,
as the command does (it sets OPENBLAS_NUM_THREADS=1 before NumPy loads; OpenBLAS starting
its other threads costs a bare ``import numpy`` 0.02-0.05 s of CPU). The five are
interleaved round by round, so that the machine's load (these machines are shared) falls
on all of them alike. The script prints each one's fastest and median wall time and CPU
time (user + system, which other processes inflate less than the wall time), and each one's
median ratio to the baselines timed before it in the same round, in wall and in CPU time.

    python benchmarks/bench_startup.py              # 15 rounds
    python benchmarks/bench_startup.py --rounds 30
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LAUNCHER = "import sys; sys.argv[0] = 'stablefit'; from stablefit_cli import run; run()"
BASELINES = (
    "python -c pass",
    "python -c 'import numpy'",
    "python -c 'import numpy, scipy.special'",
)
# What the command does before its imports: one BLAS thread unless the user chose.
ONE_BLAS_THREAD = "import os\nos.environ.setdefault('OPENBLAS_NUM_THREADS', '1')\n"
# Python may write its bytecode caches, as a pip install does when it installs the package
# (an editable install writes them on the first run): a process that compiles every module
# from source, as under PYTHONDONTWRITEBYTECODE=1, spends a further 0.1-0.2 s.
ENVIRONMENT = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}


def commands(csv: Path) -> dict[str, list[str]]:
    """The command lines timed, baselines first; the CLI as its console script runs it."""
    stablefit = [sys.executable, "-c", LAUNCHER]
    return {
        BASELINES[0]: [sys.executable, "-c", "pass"],
        BASELINES[1]: [sys.executable, "-c", ONE_BLAS_THREAD + "import numpy"],
        BASELINES[2]: [sys.executable, "-c", ONE_BLAS_THREAD + "import numpy, scipy.special"],
        "stablefit fit": [*stablefit, "fit", str(csv), "--target", "y"],
        "stablefit doctor": [*stablefit, "doctor", str(csv), "--target", "y"],
    }


def timed_run(argv: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENVIRONMENT
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode not in (0, 1):  # doctor's verdict may be 1
        raise SystemExit(f"{argv} failed ({done.returncode}): {done.stderr}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall, cpu


def median_ratio(runs: list[float], baseline: list[float]) -> float:
    return statistics.median(t / base for t, base in zip(runs, baseline, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "s3.csv"
        csv.write_text("x,y\n1,2\n2,4.1\n3,5.9\n")
        timed = commands(csv)
        for argv in timed.values():  # bytecode and file caches written and warm
            timed_run(argv)
        wall: dict[str, list[float]] = {name: [] for name in timed}
        cpu: dict[str, list[float]] = {name: [] for name in timed}
        for _ in range(args.rounds):
            for name, argv in timed.items():
                seconds = timed_run(argv)
                wall[name].append(seconds[0])
                cpu[name].append(seconds[1])
    print(f"{args.rounds} interleaved rounds; load average {os.getloadavg()[0]:.1f} at the end")
    width = max(map(len, timed))
    print(f"{'':{width}} {'wall: fastest':>13} {'median':>7} {'CPU: fastest':>13} {'median':>7}")
    for name in timed:
        print(
            f"{name:{width}} {min(wall[name]):12.3f}s {statistics.median(wall[name]):6.3f}s "
            f"{min(cpu[name]):12.3f}s {statistics.median(cpu[name]):6.3f}s"
        )
    print("\nmedian ratios to the baselines timed before it in the same round (wall, CPU)")
    names = list(timed)
    for index, name in enumerate(names):
        for base in (base for base in names[:index] if base in BASELINES):
            print(
                f"{name:{width}} {median_ratio(wall[name], wall[base]):5.2f}×, "
                f"{median_ratio(cpu[name], cpu[base]):5.2f}×  {base}"
            )


if __name__ == "__main__":
    main()
