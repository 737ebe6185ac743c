"""fit and doctor on a real ``distributed.LocalCluster`` of two worker processes.

One cluster serves the module. The answers must be the one-machine answers: coefficients
to the certified digits, the same certificate, the same LRE on NIST's datasets, the same
findings, the same error for a bad partition, even when a worker dies mid-fit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from distributed import Client, LocalCluster

import stablefit
from stablefit.cli.main import main
from stablefit.engines.dask import FAN_IN, DaskEngine, HeldReader
from stablefit.errors import StablefitInputError
from stablefit.io import open_source
from tests.nist import NAMES, load, lre

N_ROWS = 6000


@pytest.fixture(scope="module")
def client():
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    """Well-conditioned features, one offset far from zero, and a noisy linear target."""
    rng = np.random.default_rng(5)
    frame = pd.DataFrame(
        {
            "a": rng.normal(size=N_ROWS),
            "b": rng.normal(size=N_ROWS) * 1e4 + 1.7e9,
            "c": rng.integers(0, 50, N_ROWS).astype(float),
        }
    )
    frame["y"] = 3 + 2 * frame.a - 1e-3 * frame.b + 0.25 * frame.c + rng.normal(size=N_ROWS)
    return frame


@pytest.fixture(scope="module")
def one_machine(table):
    return stablefit.fit(table[["a", "b", "c"]], table["y"])


def assert_same_fit(cluster, local) -> None:
    """Coefficients agree to the certified digits; the certificate within one digit."""
    digits = local.certificate.digits
    np.testing.assert_allclose(cluster.params, local.params, rtol=10.0**-digits, atol=0)
    np.testing.assert_allclose(cluster.bse, local.bse, rtol=1e-10)
    assert abs(cluster.certificate.digits - digits) <= 1
    assert cluster.n_obs == local.n_obs


def test_a_dask_dataframe_fits_as_on_one_machine(client, table, one_machine):
    # More partitions than one merge takes: the results go up a tree two merges deep.
    frame = dd.from_pandas(table, npartitions=2 * FAN_IN + 3)
    assert_same_fit(stablefit.fit(frame, target="y"), one_machine)


def test_a_dask_array_fits_as_on_one_machine(client, table, one_machine):
    X = da.from_array(table[["a", "b", "c"]].to_numpy(), chunks=(1000, 2))
    y = da.from_array(table["y"].to_numpy(), chunks=1700)  # not aligned with X's blocks
    assert_same_fit(stablefit.fit(X, y, engine=client), one_machine)


@pytest.fixture(scope="module")
def parquet_parts(table, tmp_path_factory):
    folder = tmp_path_factory.mktemp("parts")
    for i, start in enumerate(range(0, N_ROWS, 1000)):
        table.iloc[start : start + 1000].to_parquet(folder / f"part-{i}.parquet", index=False)
    return str(folder / "part-*.parquet")


def test_files_read_on_the_workers(client, parquet_parts, one_machine, capsys):
    assert_same_fit(stablefit.fit(parquet_parts, target="y", engine=client), one_machine)
    address = client.scheduler.address
    code = main(
        ["fit", parquet_parts, "--target", "y", "--scheduler", address, "--json", "-", "--progress"]
    )
    assert code == 0
    out, err = capsys.readouterr()
    printed = json.loads(out)
    assert "pass 1" in err and "6/6 partitions" in err
    coef = [printed["features"][name]["coef"] for name in ("a", "b", "c")]
    np.testing.assert_allclose(coef, one_machine.coef, rtol=1e-13)


def test_feather_files_read_on_the_workers(client, table, one_machine, tmp_path):
    """A partition's reader goes to the workers with its file's format."""
    for i, start in enumerate(range(0, N_ROWS, 1000)):
        table.iloc[start : start + 1000].reset_index(drop=True).to_feather(
            tmp_path / f"part-{i}.feather"
        )
    fitted = stablefit.fit(str(tmp_path / "part-*.feather"), target="y", engine=client)
    assert_same_fit(fitted, one_machine)


def test_partitions_are_held_between_passes_when_they_fit(client, parquet_parts):
    source = open_source(parquet_parts, target="y", engine=client)
    held = source.kept(nbytes=N_ROWS * 4 * 8)
    assert all(isinstance(p.reader, HeldReader) for p in held.partitions)
    assert source.kept(nbytes=10**15).partitions == source.partitions
    rows = held.engine.map_reduce(count_rows, held.partitions, sum_two)
    assert rows == N_ROWS


def count_rows(source) -> int:
    return sum(batch.n_rows for batch in source.batches())


def sum_two(a: int, b: int) -> int:
    return a + b


@pytest.mark.parametrize("name", NAMES)
def test_nist_in_partitions_reaches_the_same_lre(client, name):
    case = load(name)
    if name == "Longley":
        columns = case.model["predictor_columns"]
        frame = pd.DataFrame({c: case.columns[c] for c in columns}).assign(y=case.y)
        local = stablefit.fit(frame, target="y")
        cluster = stablefit.fit(dd.from_pandas(frame, npartitions=3), target="y")
    else:
        degree, intercept = case.model["degree"], case.model["intercept"]
        x, y = case.columns["x"], case.y
        local = stablefit.fit_polynomial(x, y, degree, intercept=intercept)
        chunks = -(-x.size // 3)
        cluster = stablefit.fit_polynomial(
            da.from_array(x, chunks=chunks),
            da.from_array(y, chunks=chunks),
            degree,
            intercept=intercept,
        )
    local_lre = min(lre(b, ref) for b, ref in zip(local.params, case.estimates, strict=True))
    cluster_lre = min(lre(b, ref) for b, ref in zip(cluster.params, case.estimates, strict=True))
    assert cluster_lre == pytest.approx(local_lre, abs=0.1), (local_lre, cluster_lre)
    assert cluster.certificate.digits == local.certificate.digits


def test_doctor_finds_what_it_finds_on_one_machine(client, table):
    frame = table.copy()
    frame.loc[[10, 4000], "c"] = np.nan
    frame.loc[5000, "a"] = 40.0  # an outlier
    local = stablefit.diagnose(frame, target="y", optimizer="sgd")
    cluster = stablefit.diagnose(dd.from_pandas(frame, npartitions=5), target="y", optimizer="sgd")
    assert [f.code for f in cluster.findings] == [f.code for f in local.findings]
    assert {"SF101", "SF141"} <= {f.code for f in local.findings}
    assert cluster.training.outcome == local.training.outcome
    assert cluster.training.max_stable_learning_rate == pytest.approx(
        local.training.max_stable_learning_rate, rel=1e-12
    )
    missing = next(f for f in cluster.findings if f.code == "SF101")
    assert "partition 0 row 10" in missing.message + str(missing.evidence)


def command(*args: object) -> subprocess.CompletedProcess:
    """``stablefit ARGS...`` as a command of its own."""
    argv = [sys.executable, "-m", "stablefit.cli.main", *map(str, args)]
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def test_doctor_starts_its_own_cluster_with_workers(parquet_parts, table):
    # A command of its own: no client of this process's to fall back on.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "stablefit.cli.main",
            "doctor",
            parquet_parts,
            "--target",
            "y",
            "--workers",
            "1",
            "--json",
            "-",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    local = stablefit.diagnose(table, target="y")
    assert [f["code"] for f in printed["findings"]] == [f.code for f in local.findings]


def test_a_bad_file_on_its_own_cluster_is_one_line(tmp_path):
    (tmp_path / "p-1.csv").write_text("a,b,y\n1,2,3\n2,3,4\n3,1,5\n")
    (tmp_path / "p-2.csv").write_text("a,b,y\n1,2,3\n2,x,4\n3,1,5\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "stablefit.cli.main",
            "fit",
            str(tmp_path / "p-*.csv"),
            "--target",
            "y",
            "--workers",
            "1",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    error = done.stderr.splitlines()[-1]
    assert error.startswith("stablefit fit: error: ") and "Traceback" not in done.stderr
    assert "p-2.csv" in error and "'b'" in error and "line 3" in error


@pytest.fixture
def csv_parts(table, tmp_path):
    for i, start in enumerate(range(0, N_ROWS, 2000)):
        table.iloc[start : start + 2000].to_csv(tmp_path / f"part-{i}.csv", index=False)
    return tmp_path


def test_a_bad_partition_gives_the_one_machine_error(client, csv_parts, capsys):
    bad = csv_parts / "part-1.csv"
    lines = bad.read_text().splitlines()
    lines[700] = lines[700].replace(",", ",oops", 1)
    bad.write_text("\n".join(lines) + "\n")
    pattern = str(csv_parts / "part-*.csv")
    with pytest.raises(StablefitInputError) as here:
        stablefit.fit(pattern, target="y")
    with pytest.raises(StablefitInputError) as there:
        stablefit.fit(pattern, target="y", engine=client)
    assert str(there.value) == str(here.value)
    assert "part-1.csv" in str(here.value) and "line 701" in str(here.value)
    assert "'b'" in str(here.value)
    address = client.scheduler.address
    assert main(["fit", pattern, "--target", "y", "--scheduler", address]) == 2
    # The dashboard's address, then the error in one line.
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and lines[0].startswith("Dask dashboard: http")
    assert lines[1] == f"stablefit fit: error: {here.value}"


class KillWorker:
    """Progress that kills a worker process by its id once ``after`` partitions of pass
    ``in_pass`` are done: in the middle of the fit, with partitions held on that worker."""

    def __init__(self, pid: int, in_pass: int, after: int) -> None:
        self.pid, self.in_pass, self.after = pid, in_pass, after
        self.passes = self.done = 0
        self.killed = False

    def start_pass(self, *, parts=None, rows=None) -> None:
        self.passes += 1
        self.done = 0

    def advance(self, *, parts=0, rows=0) -> None:
        self.done += parts
        if self.passes == self.in_pass and self.done == self.after and not self.killed:
            os.kill(self.pid, signal.SIGKILL)
            self.killed = True

    def end_pass(self) -> None:
        pass


def test_a_worker_killed_mid_fit_changes_nothing(client, parquet_parts):
    undisturbed = stablefit.fit(parquet_parts, target="y", engine=client)
    pid = next(iter(client.run(os.getpid).values()))
    killer = KillWorker(pid, in_pass=2, after=2)
    start = time.perf_counter()
    result = stablefit.fit(parquet_parts, target="y", engine=DaskEngine(client, killer))
    assert killer.killed
    assert time.perf_counter() - start < 60
    np.testing.assert_array_equal(result.params, undisturbed.params)
    np.testing.assert_array_equal(result.bse, undisturbed.bse)
    assert result.certificate == undisturbed.certificate
    client.wait_for_workers(2, timeout=60)  # the nanny has started a new process
    assert pid not in client.run(os.getpid).values()
