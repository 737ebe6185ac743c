"""Outputs never destroy inputs: refused before any work, written through what is not a
file, all of a run's files or none, and no temporary file left, even on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

STABLEFIT = [sys.executable, "-m", "stablefit.cli.main"]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture
def model_json(numeric_houses_csv, tmp_path, run_cli) -> Path:
    path = tmp_path / "model.json"
    assert run_cli("fit", numeric_houses_csv, "--target", "price", "--save", path).code == 0
    return path


def listing(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}


def assert_refused(run, *phrases: str) -> None:
    assert run.code == 2, run.err
    assert run.out == ""
    assert len(run.err.splitlines()) == 1 and "Traceback" not in run.err
    for phrase in phrases:
        assert phrase in run.err


@pytest.mark.parametrize(
    "args",
    [
        ("fit", "{data}", "--target", "price", "--json", "{data}"),
        ("fit", "{data}", "--target", "price", "--save", "{data}"),
        ("doctor", "{data}", "--target", "price", "--json", "{data}"),
        ("predict", "{model}", "{data}", "-o", "{data}"),
        ("predict", "{model}", "{data}", "-o", "{model}"),
        ("fit", "{data}", "--target", "price", "--json", "{link}"),
        ("fit", "{data}", "--target", "price", "--json", "{hardlink}"),
        ("fit", "{data}", "--target", "price", "--json", "{dotted}"),
    ],
)
def test_an_output_that_is_an_input_is_refused_and_the_input_kept(
    args, numeric_houses_csv, model_json, tmp_path, run_cli
):
    link = tmp_path / "link.csv"
    link.symlink_to(numeric_houses_csv)
    hardlink = tmp_path / "hard.csv"
    os.link(numeric_houses_csv, hardlink)
    names = {
        "data": numeric_houses_csv,
        "model": model_json,
        "link": link,
        "hardlink": hardlink,
        "dotted": f"{tmp_path}/./{numeric_houses_csv.name}",
    }
    before = listing(tmp_path)
    run = run_cli(*(arg.format(**names) for arg in args))
    assert_refused(run, "writing it would destroy the data")
    assert listing(tmp_path) == before


def test_two_outputs_on_one_file_are_refused(numeric_houses_csv, tmp_path, run_cli):
    before = listing(tmp_path)
    run = run_cli(
        "fit", numeric_houses_csv, "--target", "price", "--save", "m.json", "--json", "./m.json"
    )
    assert_refused(run, "are the same file")
    assert listing(tmp_path) == before
    run = run_cli("fit", numeric_houses_csv, "--target", "price", "--save", "-", "--json", "-")
    assert_refused(run, "are the same output")


def test_dash_is_stdout(model_json, numeric_houses_csv, tmp_path, run_cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = run_cli("predict", model_json, numeric_houses_csv, "-o", "-")
    assert run.code == 0, run.err
    assert run.out.splitlines()[0] == "prediction" and len(run.out.splitlines()) == 301
    run = run_cli("fit", numeric_houses_csv, "--target", "price", "--save", "-")
    assert json.loads(run.out)["format"] == "stablefit.linear-model"
    assert not Path("-").exists()


def test_a_missing_directory_is_refused_before_any_work(numeric_houses_csv, tmp_path, run_cli):
    run = run_cli(
        "fit", numeric_houses_csv, "--target", "price", "--json", tmp_path / "fit.json",
        "--save", tmp_path / "absent" / "m.json",
    )  # fmt: skip
    assert_refused(run, "does not exist")
    assert not (tmp_path / "fit.json").exists()


def test_a_symlink_to_a_file_stays_a_link_and_its_target_is_replaced(
    numeric_houses_csv, tmp_path, run_cli
):
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    run = run_cli("fit", numeric_houses_csv, "--target", "price", "--json", link)
    assert run.code == 0, run.err
    assert link.is_symlink() and json.loads(target.read_text())["n_obs"] == 300


def test_a_named_pipe_is_written_through_not_replaced(numeric_houses_csv, tmp_path, run_cli):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    run = run_cli("fit", numeric_houses_csv, "--target", "price", "--json", fifo)
    reader.join(timeout=30)
    assert run.code == 0, run.err
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert json.loads(received[0])["n_obs"] == 300


def test_a_link_to_the_standard_output_writes_to_it(numeric_houses_csv, tmp_path):
    link = tmp_path / "stdout"
    link.symlink_to("/proc/self/fd/1")
    done = subprocess.run(
        [*STABLEFIT, "fit", numeric_houses_csv, "--target", "price", "--json", link],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["n_obs"] == 300  # only the JSON, as with --json -
    assert link.is_symlink()


@pytest.mark.skipif(not IS_ROOT, reason="making a device node needs root")
def test_a_full_device_is_written_through_and_fails_cleanly(numeric_houses_csv, tmp_path, run_cli):
    full = tmp_path / "full"
    os.mknod(full, 0o666 | stat.S_IFCHR, os.makedev(1, 7))  # what /dev/full is
    run = run_cli(
        "fit", numeric_houses_csv, "--target", "price", "--json", tmp_path / "a.json",
        "--save", full,
    )  # fmt: skip
    assert run.code == 2 and "No space left on device" in run.err
    assert len(run.err.splitlines()) == 1
    assert stat.S_ISCHR(os.lstat(full).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "all_houses.csv",
        "full",
        "numeric_houses.csv",
    ]


@pytest.mark.skipif(not IS_ROOT, reason="making a device node needs root")
def test_a_full_disk_under_stdout_is_one_line_and_no_file(numeric_houses_csv, tmp_path):
    full = tmp_path / "full"
    os.mknod(full, 0o666 | stat.S_IFCHR, os.makedev(1, 7))
    with open(full, "wb") as stdout:
        done = subprocess.run(
            [*STABLEFIT, "fit", numeric_houses_csv, "--target", "price", "--save", "m.json"],
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
        )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "standard output" in done.stderr
    assert not (tmp_path / "m.json").exists()


def test_a_reader_that_stops_early_is_not_an_error(numeric_houses_csv, tmp_path):
    shell = f"{' '.join(STABLEFIT)} fit {numeric_houses_csv} --target price --save m.json | head -1"
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", shell], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert json.loads((tmp_path / "m.json").read_text())["format"] == "stablefit.linear-model"


def test_stdout_redirected_onto_the_input_is_refused(numeric_houses_csv, model_json):
    before = numeric_houses_csv.read_bytes()
    with open(numeric_houses_csv, "ab") as stdout:
        done = subprocess.run(
            [*STABLEFIT, "predict", model_json, numeric_houses_csv],
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
        )
    assert done.returncode == 2 and "standard output is redirected to" in done.stderr
    assert numeric_houses_csv.read_bytes() == before


def test_sigterm_during_predict_leaves_no_file(model_json, tmp_path, houses_writer):
    data = houses_writer(tmp_path / "many.csv", rows=400_000)
    out = tmp_path / "predictions.csv"
    process = subprocess.Popen(
        [*STABLEFIT, "predict", model_json, data, "-o", out],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not any(p.name.endswith(".tmp") for p in tmp_path.iterdir()):
        assert process.poll() is None and time.monotonic() < deadline, "no temporary file seen"
        time.sleep(0.005)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "SIGTERM" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["all_houses.csv", "numeric_houses.csv", "model.json", "many.csv"]
    )


@pytest.mark.parametrize("kind", ["written whole", "streamed"])
def test_a_signal_as_an_output_is_staged_leaves_nothing(tmp_path, monkeypatch, kind):
    from stablefit.cli.outputs import plan_outputs
    from tests.report.test_files import interrupted_once_the_temporary_exists

    outputs = plan_outputs({}, {"out": ("-o", str(tmp_path / "out.csv"))})
    with interrupted_once_the_temporary_exists(monkeypatch), pytest.raises(KeyboardInterrupt):
        if kind == "written whole":
            outputs.write_bytes("out", b"rows")
        else:
            with outputs.open("out") as stream:
                stream.write(b"rows")
    outputs.discard()
    assert list(tmp_path.iterdir()) == []


def test_a_signal_during_the_commit_waits_and_is_told_truthfully(
    numeric_houses_csv, tmp_path, run_cli, monkeypatch
):
    """Ctrl-C while the first of two files is put in place: both land whole, the exit is
    the interrupt's, and the message does not claim that nothing was written."""
    put_in_place = os.replace

    def replace_then_interrupt(*args, **kwargs):
        put_in_place(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(os, "replace", replace_then_interrupt)
    json_path, model_path = tmp_path / "fit.json", tmp_path / "model.json"
    run = run_cli(
        "fit", numeric_houses_csv, "--target", "price", "--json", json_path, "--save", model_path
    )
    assert run.code == 130, run.err
    assert "after the output files were written" in run.err
    assert json.loads(json_path.read_text())["target"] == "price"
    assert json.loads(model_path.read_text())
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
