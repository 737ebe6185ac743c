"""Plain text is plain: names, paths and values from files are never read as rich markup,
emoji codes or terminal escapes, on a terminal (a real pseudo-terminal, and rich's terminal
path forced in this process) as in a pipe."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ESCAPE = "\x1b[31m"
NAMES = ["speed [m/s]", "dose [/kg]", "a:smile:b", f"e{ESCAPE}vil", "[bold]x[/bold]"]


def tricky_csv(directory: Path) -> Path:
    """Columns named like markup, an emoji code and an escape sequence, in a path that is
    markup too."""
    folder = directory / "runs[red]" / "a["
    folder.mkdir(parents=True)
    path = folder / "x].csv"  # the path holds "[/x]", a closing tag to rich
    rng = np.random.default_rng(5)
    X = rng.normal(size=(60, len(NAMES)))
    y = X @ np.arange(1.0, len(NAMES) + 1) + rng.normal(0, 0.1, 60)
    lines = [",".join(f'"{name}"' for name in [*NAMES, "y"])]
    lines += [
        ",".join(repr(float(v)) for v in [*row, target]) for row, target in zip(X, y, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def assert_plain(text: str) -> None:
    for name in NAMES[:3]:
        assert name in text or name.split(" ")[0] in text
    assert "e\\x1b[31mvil" in text  # shown, not obeyed
    assert ESCAPE + "vil" not in text
    assert "Traceback" not in text


@pytest.mark.parametrize("terminal", [False, True], ids=["pipe", "terminal"])
@pytest.mark.parametrize("command", ["fit", "doctor"])
def test_names_and_paths_are_text(command, terminal, tmp_path, run_cli, monkeypatch):
    if terminal:
        monkeypatch.setenv("FORCE_COLOR", "1")  # rich's terminal path, colours and all
        monkeypatch.setenv("COLUMNS", "250")
    else:
        monkeypatch.delenv("FORCE_COLOR", raising=False)
    data = tricky_csv(tmp_path)
    out = data.parent / "kg].json"  # "a[/kg].json"
    run = run_cli(command, data, "--target", "y", "--json", out)
    assert run.code in (0, 1), run.err
    assert_plain(run.out)
    assert "runs[red]/a[/x].csv" in run.out
    assert set(NAMES) <= strings_in(json.loads(out.read_text()))


def strings_in(document: object) -> set[str]:
    """Every string of a JSON document, keys and values."""
    if isinstance(document, dict):
        return set(document).union(*(strings_in(v) for v in document.values()))
    if isinstance(document, list):
        return set().union(*(strings_in(v) for v in document))
    return {document} if isinstance(document, str) else set()


def test_an_escape_in_an_error_message_is_shown_not_sent(tmp_path, run_cli):
    data = tricky_csv(tmp_path)
    run = run_cli("fit", data, "--target", f"z{ESCAPE}\x07")
    assert run.code == 2
    assert "\x1b" not in run.err and "\x07" not in run.err
    assert "\\x1b[31m" in run.err and len(run.err.splitlines()) == 1


def run_in_terminal(args: list[str], cwd: Path) -> tuple[int, str]:
    """Run ``stablefit ARGS`` with a pseudo-terminal as stdin, stdout and stderr."""
    leader, follower = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "200", "LINES": "50"}
    env.pop("FORCE_COLOR", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "stablefit.cli.main", *args],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        cwd=cwd,
        env=env,
        close_fds=True,
    )
    os.close(follower)
    received = bytearray()
    while True:
        ready, _, _ = select.select([leader], [], [], 120)
        if not ready:
            process.kill()
            break
        try:
            piece = os.read(leader, 65536)
        except OSError:  # EIO: the last writer has gone
            break
        if not piece:
            break
        received += piece
    os.close(leader)
    return process.wait(timeout=60), received.decode("utf-8", errors="replace")


def test_a_real_terminal_shows_names_as_text(tmp_path):
    data = tricky_csv(tmp_path)
    code, screen = run_in_terminal(
        ["fit", str(data), "--target", "y", "--save", "runs[red]/a[/kg].json"], tmp_path
    )
    assert code == 0, screen
    assert_plain(screen)
    assert "\x1b[1m" in screen  # rich's own styling reached the terminal
    assert json.loads((data.parent / "kg].json").read_text())["coefficients"]


@pytest.mark.parametrize("columns", [250, 90, 60, 40])
def test_no_number_is_split_or_cut_on_a_narrow_terminal(columns, tmp_path, run_cli, monkeypatch):
    # Wrapped inside a cell, -0.00878049 reads as -0.008780 and 49; cut, as -0.0087….
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("COLUMNS", str(columns))
    rng = np.random.default_rng(8)
    X = rng.normal(size=(50, 2)) * [1e-3, 1e6]
    y = X @ [7.0, -8.78049e-9] + 1e6 + rng.normal(0, 1e-3, 50)
    path = tmp_path / "narrow.csv"
    rows = [f"{a!r},{b!r},{t!r}" for (a, b), t in zip(X.tolist(), y.tolist(), strict=True)]
    path.write_text("milliseconds_since_a_long_named_event,b,y\n" + "\n".join(rows) + "\n")
    run = run_cli("fit", path, "--target", "y", "--json", tmp_path / "fit.json")
    assert run.code == 0, run.err
    fitted = json.loads((tmp_path / "fit.json").read_text())
    words = set(run.out.replace("│", " ").replace(",", " ").split())
    assert "…" not in run.out
    for entry in (fitted["intercept"], fitted["features"]["b"]):
        for value in (entry["coef"], entry["stderr"]):
            assert f"{value:.6g}" in words
