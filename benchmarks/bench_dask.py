"""stablefit on a Dask cluster, against dask.array.linalg.lstsq, dask-ml and one process.

Writes a multi-file Parquet table (default 1e7 rows x 50 features + target, 40 files, 4.1 GB
of float64), then fits it, each run in a fresh process (and a fresh LocalCluster of
worker processes with one thread each), the methods interleaved over the rounds:

- ``stablefit 1 process``: ``stablefit.fit("dir/*.parquet")`` here, file after file;
- ``stablefit N workers``: the same call with ``engine=client``;
- ``dask lstsq N workers``: ``dask.dataframe.read_parquet`` -> ``to_dask_array`` with a
  column of ones -> ``dask.array.linalg.lstsq`` (TSQR);
- ``dask-ml N workers``: ``dask_ml.linear_model.LinearRegression()`` with its defaults
  (ADMM), when dask-ml is installed (``pip install 'stablefit[bench]'``).

Time is wall-clock from the call to the coefficients (the cluster's start is not counted),
and the CPU time of the client and the workers over it (on a shared machine the CPU time is
what the work costs; wall-clock time also counts waiting for the cores); memory is each
process's peak resident set (``ru_maxrss``). Accuracy is the LRE (digits)
against the exact least-squares solution, known by construction: integer data whose rows
come in pairs with opposite integer noise, so the noise is orthogonal to every column
and the solution is the integer vector the data were made from. ``--condition ill`` makes
neighbouring columns differ by -1, 0 or 1 on a scale of 2^30 (condition number ~1e10).

For the scaling analysis the stablefit cluster run also records Dask's task stream: per
pass, the partitions' task times, the merges' times and the pass's wall time; and the
pickled size of what each partition sends up the tree.

    python benchmarks/bench_dask.py                                   # 4.1 GB, 2 rounds
    python benchmarks/bench_dask.py --rows 2000000 --condition ill    # accuracy
    python benchmarks/bench_dask.py --rows 200000 --files 8 --rounds 1   # quick check
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from bench_fit import integer_design, lre

METHODS = ("stablefit 1 process", "stablefit workers", "dask lstsq", "dask-ml")


def write_table(
    folder: Path,
    rows: int,
    cols: int,
    files: int,
    condition: str,
    seed: int = 0,
    reuse: bool = False,
) -> np.ndarray:
    """The Parquet files, and the exact solution [intercept, coef...] of their union."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    coef = rng.integers(-100, 101, size=cols).astype(float)
    intercept = float(rng.integers(-1000, 1001))
    if reuse and any(folder.glob("*.parquet")):  # written before with the same arguments
        return np.concatenate([[intercept], coef])
    folder.mkdir(parents=True, exist_ok=True)
    per_file = rows // files
    for index in range(files):
        half = per_file // 2
        X = integer_design(rng, half, cols, condition)
        signal = X @ coef + intercept
        noise = rng.integers(-(2**20), 2**20, size=half).astype(float)
        X = np.repeat(X, 2, axis=0)
        y = np.repeat(signal, 2) + np.column_stack([noise, -noise]).ravel()
        assert np.abs(y).max() < 2**53  # every sum above is exact
        table = pa.table({**{f"x{j}": X[:, j] for j in range(cols)}, "y": y})
        pq.write_table(table, folder / f"part-{index:04d}.parquet", row_group_size=1 << 16)
    return np.concatenate([[intercept], coef])


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    """CPU time of this process so far: on a shared machine, what the work itself cost."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- one measured run, in a process of its own ------------------------------------------------


def run(method: str, pattern: str, workers: int, cols: int) -> dict:
    if method == "stablefit 1 process":
        import stablefit

        start, cpu = time.perf_counter(), cpu_seconds()
        params = stablefit.fit(pattern, target="y").params
        return {
            "seconds": time.perf_counter() - start,
            "cpu_seconds": cpu_seconds() - cpu,
            "params": params.tolist(),
            "peak_mb": [peak_rss_mb()],
            "client_mb": peak_rss_mb(),
        }
    from distributed import Client, LocalCluster, get_task_stream

    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        first = str(sorted(Path(pattern).parent.glob("*.parquet"))[0])
        client.run(warm_up, method, first)  # so that the time is the work's
        stream: list[dict] = []
        worker_cpu = client.run(cpu_seconds)
        start, cpu = time.perf_counter(), cpu_seconds()
        if method == "stablefit workers":
            import stablefit

            with get_task_stream(client) as ts:
                params = stablefit.fit(pattern, target="y", engine=client).params
            stream = ts.data
        elif method == "dask lstsq":
            params = dask_lstsq(pattern, cols)
        else:
            params = dask_ml_fit(pattern, cols)
        seconds = time.perf_counter() - start
        client_cpu = cpu_seconds() - cpu
        used = client.run(cpu_seconds)
        peaks = client.run(peak_rss_mb)
        return {
            "seconds": seconds,
            # Workers and client; a worker restarted mid-run would be missed (none was).
            "cpu_seconds": client_cpu + sum(used[w] - worker_cpu[w] for w in used),
            "params": np.asarray(params).tolist(),
            "peak_mb": sorted(peaks.values()),
            "client_mb": peak_rss_mb(),
            "passes": passes_of(stream),
        }


def warm_up(method: str, first: str) -> None:
    """What a worker of a cluster in use has done already: its imports, and a first read
    (stablefit's: its compiled kernels loaded)."""
    if method.startswith("stablefit"):
        import stablefit.pipeline
        from stablefit.io import open_source

        stablefit.pipeline.summarize(open_source(first, target="y"), detail=False)
    else:
        import dask.array  # noqa: F401
        import pandas

        if method == "dask-ml":
            import dask_ml.linear_model  # noqa: F401
        pandas.read_parquet(first)


def design(pattern: str, cols: int):
    import dask.array as da
    import dask.dataframe as dd

    table = dd.read_parquet(pattern).to_dask_array(lengths=True)
    return table[:, :cols], table[:, cols], da


def dask_lstsq(pattern: str, cols: int) -> np.ndarray:
    X, y, da = design(pattern, cols)
    A = da.concatenate([da.ones((X.shape[0], 1), chunks=(X.chunks[0], 1)), X], axis=1)
    A = A.rechunk({1: -1})
    solution = da.linalg.lstsq(A, y.rechunk((A.chunks[0],)))[0]
    return solution.compute()


def dask_ml_fit(pattern: str, cols: int) -> np.ndarray:
    import dask
    from dask_ml.linear_model import LinearRegression

    X, y, _ = design(pattern, cols)
    # Held in the workers' memory first, as dask-ml advises: each iteration reads X again.
    X, y = dask.persist(X, y)
    model = LinearRegression().fit(X, y)
    return np.concatenate([[model.intercept_], model.coef_])


def passes_of(stream: list[dict]) -> list[dict]:
    """Per pass (one token of stablefit's task keys): task times and the pass's wall time."""
    passes: dict[str, dict] = {}
    for record in stream:
        key = str(record["key"])
        if not key.startswith("stablefit-"):
            continue
        kind, token = key.split("-")[1], key.split("-")[2]
        compute = [s for s in record["startstops"] if s["action"] == "compute"]
        if not compute:
            continue
        entry = passes.setdefault(
            token, {"partition": [], "merge": [], "first": math.inf, "last": 0.0}
        )
        for s in compute:
            entry[kind].append(s["stop"] - s["start"])
            entry["first"] = min(entry["first"], s["start"])
            entry["last"] = max(entry["last"], s["stop"])
    out = []
    for entry in sorted(passes.values(), key=lambda e: e["first"]):
        out.append(
            {
                "partitions": len(entry["partition"]),
                "partition_seconds": sum(entry["partition"]),
                "merges": len(entry["merge"]),
                "merge_seconds": sum(entry["merge"]),
                "wall_seconds": entry["last"] - entry["first"],
            }
        )
    return out


# -- the benchmark ------------------------------------------------------------------------------


def result_sizes(pattern: str, cols: int) -> dict[str, int]:
    """Pickled bytes each partition sends up the tree, per kind of pass."""
    import stablefit.solve.lstsq as lstsq
    from stablefit.io import open_source
    from stablefit.summary import summarize

    first = sorted(Path(pattern).parent.glob("*.parquet"))[0]
    source = open_source(str(first), target="y")
    k = cols + 1
    zero = lstsq._PassTotals(np.zeros(k), np.zeros(k), 0.0, 0, 0.0, None)
    return {
        "summary (fit)": len(pickle.dumps(summarize(source, detail=False))),
        "summary (doctor)": len(pickle.dumps(summarize(source, detail=True))),
        "refinement totals": len(pickle.dumps(zero)),
        "triangular factor": len(pickle.dumps(np.zeros((k + 1, k + 1)))),
    }


def load_average() -> float:
    return os.getloadavg()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--cols", type=int, default=50)
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--condition", choices=("well", "ill"), default="well")
    parser.add_argument("--folder", default="bench-dask-data")
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    parser.add_argument("--keep", action="store_true", help="keep the files afterwards")
    parser.add_argument(
        "--reuse", action="store_true", help="use the files a --keep run left with these arguments"
    )
    parser.add_argument("--run", help=argparse.SUPPRESS)
    parser.add_argument("--json", help="also write every run's figures here")
    args = parser.parse_args()
    folder = Path(args.folder)
    pattern = str(folder / "*.parquet")
    if args.run:
        print(json.dumps(run(args.run, pattern, args.workers, args.cols)))
        return
    methods = list(args.methods)
    try:
        import dask_ml  # noqa: F401
    except ImportError:
        print("dask-ml is not installed: left out (pip install 'stablefit[bench]')")
        methods = [m for m in methods if m != "dask-ml"]
    start = time.perf_counter()
    exact = write_table(folder, args.rows, args.cols, args.files, args.condition, reuse=args.reuse)
    size = sum(p.stat().st_size for p in folder.glob("*.parquet"))
    print(
        f"{args.files} Parquet files, {args.rows:,} x {args.cols} + target "
        f"({args.rows * (args.cols + 1) * 8 / 1e9:.2f} GB of float64, {size / 1e9:.2f} GB on "
        f"disk), {args.condition}-conditioned, written in {time.perf_counter() - start:.0f} s"
    )
    runs: list[dict] = []
    try:
        for round_ in range(args.rounds):
            for method in methods:
                load = load_average()
                done = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--run",
                        method,
                        "--folder",
                        str(folder),
                        "--workers",
                        str(args.workers),
                        "--cols",
                        str(args.cols),
                    ],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if done.returncode != 0:
                    print(f"{method}: failed\n{done.stderr[-2000:]}")
                    continue
                figures = json.loads(done.stdout.strip().splitlines()[-1])
                figures.update(
                    method=method,
                    round=round_,
                    load_before=load,
                    load_after=load_average(),
                    lre=lre(figures["params"], exact),
                )
                runs.append(figures)
                print(
                    f"round {round_ + 1} {method:20s} {figures['seconds']:7.1f} s "
                    f"(CPU {figures['cpu_seconds']:6.1f} s)   LRE "
                    f"{figures['lre']:5.1f}   peak MB per process "
                    f"{', '.join(f'{m:.0f}' for m in figures['peak_mb'])}   client "
                    f"{figures['client_mb']:.0f} MB   load {load:.1f}->"
                    f"{figures['load_after']:.1f}",
                    flush=True,
                )
        sizes = result_sizes(pattern, args.cols)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    print("\nmedians over the rounds:")
    for method in methods:
        mine = [r for r in runs if r["method"] == method]
        if mine:
            seconds = float(np.median([r["seconds"] for r in mine]))
            cpu = float(np.median([r.get("cpu_seconds", np.nan) for r in mine]))
            peak = max(max(r["peak_mb"]) for r in mine)
            print(
                f"  {method:20s} {seconds:7.1f} s (CPU {cpu:.1f} s)   LRE "
                f"{min(r['lre'] for r in mine):5.1f}   peak per process {peak:.0f} MB"
            )
    for r in runs:
        for number, p in enumerate(r.get("passes", []), start=1):
            if r["round"] == 0:
                print(
                    f"  pass {number}: {p['partitions']} partitions "
                    f"{p['partition_seconds']:.2f} s of tasks, {p['merges']} merges "
                    f"{p['merge_seconds'] * 1e3:.1f} ms, wall {p['wall_seconds']:.2f} s"
                )
    print("bytes sent up the tree per partition:", sizes)
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, "sizes": sizes}, indent=1))


if __name__ == "__main__":
    main()
