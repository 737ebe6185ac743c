"""Output files are replaced whole or not at all (stablefit.report.files)."""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from stablefit.errors import StablefitInputError
from stablefit.report.files import open_atomic, write_bytes_atomic, write_text_atomic


def test_writes_and_replaces(tmp_path):
    path = tmp_path / "out.json"
    write_text_atomic(path, "first")
    write_text_atomic(path, "second ✓")
    assert path.read_text(encoding="utf-8") == "second ✓"
    assert os.listdir(tmp_path) == ["out.json"]
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()


def test_an_error_midway_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "out.csv"
    write_bytes_atomic(path, b"old")
    with pytest.raises(RuntimeError), open_atomic(path) as stream:
        stream.write(b"partial")
        raise RuntimeError("failed while writing")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.csv"]


def test_missing_directory(tmp_path):
    with pytest.raises(StablefitInputError, match="does not exist"):
        write_text_atomic(tmp_path / "nowhere" / "out.json", "x")


def test_target_is_a_directory(tmp_path):
    with pytest.raises(StablefitInputError, match="is a directory"):
        write_text_atomic(tmp_path, "x")


NOBODY = 65534


def _as_unprivileged(check) -> None:
    """Run ``check`` as this user, or, for root (who may write anywhere), in a forked
    child that has dropped to the unprivileged user ``nobody``."""
    if os.geteuid() != 0:
        check()
        return
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child's outcome is its exit code)
        code = 1
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            check()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the check failed as an unprivileged user"


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_unwritable_directory():
    # Under a directory anyone may enter (root's tmp_path is closed to other users).
    with tempfile.TemporaryDirectory() as parent:
        os.chmod(parent, 0o755)
        locked = Path(parent) / "locked"
        locked.mkdir()
        locked.chmod(0o555)

        def check() -> None:
            with pytest.raises(StablefitInputError, match="cannot write"):
                write_text_atomic(locked / "out.json", "x")
            assert os.listdir(locked) == []

        try:
            _as_unprivileged(check)
        finally:
            locked.chmod(0o700)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def interrupted_once_the_temporary_exists(monkeypatch) -> Iterator[None]:
    """A real SIGINT, sent the moment the temporary file exists: the narrowest window.

    Another thread is alive meanwhile, as BLAS's are in a real run: the kernel may hand
    it the signal, which the interpreter still handles in the main thread.
    """
    create = tempfile.mkstemp

    def create_then_interrupt(*args, **kwargs):
        made = create(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)
        return made

    monkeypatch.setattr(tempfile, "mkstemp", create_then_interrupt)
    idle = threading.Event()
    other = threading.Thread(target=idle.wait)
    other.start()
    try:
        yield
    finally:
        idle.set()
        other.join()


def test_a_signal_as_the_temporary_is_created_leaves_nothing(tmp_path, monkeypatch):
    path = tmp_path / "out.csv"
    write_bytes_atomic(path, b"old")
    with (
        interrupted_once_the_temporary_exists(monkeypatch),
        pytest.raises(KeyboardInterrupt),
        open_atomic(path) as stream,
    ):
        stream.write(b"new")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.csv"]
