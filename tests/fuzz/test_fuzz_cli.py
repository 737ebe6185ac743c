"""Hostile files and output paths against the commands, in this process: every run ends
with exit 0, 1 or 2 and, for 2, one line; never a traceback or a "bug" line; the inputs
are unchanged, and no file is left but the complete outputs of a run that succeeded."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stablefit.cli.main import EXIT_BUG, main

from .conftest import count_case
from .strategies import csv_file, parquet_file

VALID = "x,z,y\n1,2,3.5\n2,1,4\n3,5,9.25\n4,4,7\n5,0,6.5\n"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and not p.is_symlink()}


def run(args: list[str]) -> tuple[int, str, str]:
    """``stablefit ARGS`` in this process, with a byte-capable stdout."""
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    err = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(args)
        except SystemExit as stop:  # argparse
            code = int(stop.code or 0)
        out.flush()
    return code, out.buffer.getvalue().decode("utf-8", "replace"), err.getvalue()


def check_run(command: str, code: int, err: str, allowed: tuple[int, ...]) -> None:
    assert "Traceback" not in err, err
    assert code != EXIT_BUG, err  # the bug line names the file holding the traceback
    assert code in allowed, (code, err)
    if code == 2:
        errors = [line for line in err.splitlines() if ": error: " in line]
        assert len(errors) == 1 and errors[0].startswith(f"stablefit {command}: error: "), err


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("model")
    (folder / "train.csv").write_text(VALID)
    path = folder / "model.json"
    assert run(["fit", str(folder / "train.csv"), "--target", "y", "--save", str(path)])[0] == 0
    return path


COMMANDS = st.sampled_from(["fit", "doctor", "predict", "fit-drop"])


@settings(settings.get_profile("fuzz"), max_examples=500)
@given(file=st.one_of(csv_file(), csv_file(), csv_file(), parquet_file()), command=COMMANDS)
def test_hostile_files_end_in_one_line(file, command, model):
    name, data = file
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        before = snapshot(Path(folder))
        out = Path(folder) / "out.json"
        if command == "predict":
            args = ["predict", str(model), str(path), "-o", str(Path(folder) / "p.csv")]
        else:
            args = [command.removesuffix("-drop"), str(path), "--target", "y", "--json", str(out)]
            args += ["--drop-non-numeric"] if command == "fit-drop" else []
            args += ["--epochs", "3"] if command == "doctor" else []
        code, _, err = run(args)
        count_case(command.removesuffix("-drop"))
        check_run(args[0], code, err, (0, 1, 2))
        after = snapshot(Path(folder))
        assert after.pop(path.name) == data  # the input, unchanged
        if code == 2:
            assert after.keys() == before.keys() - {path.name}, after.keys()
        else:
            assert all(not n.endswith(".tmp") for n in after), after.keys()


MODEL_DOCUMENTS = st.one_of(
    st.binary(max_size=64),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
        max_leaves=8,
    ).map(lambda doc: json.dumps(doc).encode()),
    st.fixed_dictionaries(
        {
            "format": st.just("stablefit.linear-model"),
            "version": st.sampled_from([1, 1, 2, "1", True]),
            "target": st.text(max_size=3),
            "intercept": st.one_of(st.floats(), st.integers(), st.booleans(), st.text()),
            "coefficients": st.dictionaries(
                st.sampled_from(["x", "z", "w", "[x]"]),
                st.one_of(st.floats(), st.integers(-(10**400), 10**400), st.booleans()),
                max_size=3,
            ),
        }
    ).map(lambda doc: json.dumps(doc).encode()),
    st.integers(1, 200_000).map(lambda depth: b"[" * depth + b"]" * depth),
)


@settings(settings.get_profile("fuzz"), max_examples=150)
@given(document=MODEL_DOCUMENTS)
def test_hostile_model_files_end_in_one_line(document):
    with tempfile.TemporaryDirectory() as folder:
        model = Path(folder) / "model.json"
        model.write_bytes(document)
        data = Path(folder) / "data.csv"
        data.write_text(VALID)
        code, out, err = run(["predict", str(model), str(data)])
        count_case("predict")
        check_run("predict", code, err, (0, 2))
        assert model.read_bytes() == document and data.read_text() == VALID
        if code == 0:
            assert out.splitlines()[0] == "prediction" and len(out.splitlines()) == 6


PATH_KINDS = st.sampled_from(
    ["input", "./input", "link-to-input", "hardlink", "directory", "missing-dir", "file-as-dir",
     "dash", "brackets", "newline", "escape", "unicode", "existing", "dangling-link", "dot",
     "empty", "same-twice", "long"]
)  # fmt: skip


def output_path(kind: str, folder: Path, data: Path) -> str:
    """A hostile output path of the given kind, made real in ``folder``."""
    if kind == "input":
        return str(data)
    if kind == "./input":
        return f"{folder}/./{data.name}"
    if kind == "link-to-input":
        (folder / "link.csv").symlink_to(data)
        return str(folder / "link.csv")
    if kind == "hardlink":
        os.link(data, folder / "hard.csv")
        return str(folder / "hard.csv")
    if kind == "directory":
        return str(folder)
    if kind == "missing-dir":
        return str(folder / "absent" / "out.json")
    if kind == "file-as-dir":
        return str(data / "out.json")
    if kind == "dash":
        return "-"
    if kind == "dangling-link":
        (folder / "dangling.json").symlink_to(folder / "target.json")
        return str(folder / "dangling.json")
    if kind == "existing":
        (folder / "old.json").write_text("old")
        return str(folder / "old.json")
    names = {
        "brackets": "out[/red].json",
        "newline": "out\nput.json",
        "escape": "out\x1b[2J.json",
        "unicode": "résultat 列.json",
        "dot": ".",
        "empty": "",
        "same-twice": "twice.json",
        "long": "x" * 300 + ".json",
    }
    name = names[kind]
    return str(folder / name) if name not in (".", "") else name


@settings(settings.get_profile("fuzz"), max_examples=200)
@given(
    kinds=st.lists(PATH_KINDS, min_size=1, max_size=3), command=st.sampled_from(["fit", "doctor"])
)
def test_hostile_output_paths_never_destroy_inputs(kinds, command):
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        data = folder / "data.csv"
        data.write_text(VALID)
        flags = ["--json", "--save", "--html"] if command == "fit" else ["--json"]
        args = [command, str(data), "--target", "y"] + (
            ["--epochs", "3"] if command == "doctor" else []
        )
        chosen = []
        for flag, kind in zip(flags, kinds, strict=False):
            path = output_path(kind, folder, data) if kind not in chosen or kind == "dash" else ""
            chosen.append(kind)
            if flag != "--html":
                args += [flag, path]
        before = snapshot(folder)
        code, _, err = run(args)
        count_case(f"{command} outputs")
        check_run(command, code, err, (0, 1, 2))
        after = snapshot(folder)
        assert after["data.csv"] == VALID.encode()
        assert not [n for n in after if n.endswith(".tmp")]
        if code == 2:
            assert after == before


def test_a_column_of_tiny_values_fits_without_overflow(tmp_path):
    """A slope near 4.7e280 is exact, but its variance (near 1e560) is beyond float64:
    the standard error is infinite, and a note says so instead of a RuntimeWarning."""
    data = tmp_path / "tiny.csv"
    data.write_text(
        "x,y\n3.45584192064786e-281,-1.303157231604361\n"
        "8.216181435011583e-281,0.9053558666731177\n6e-281,0.1\n"
    )
    code, out, err = run(["fit", str(data), "--target", "y"])
    assert code == 0 and "warning" not in err, err
    assert "The variance of 'x' is beyond float64's range" in " ".join(out.split())


@pytest.mark.keras
@settings(settings.get_profile("fuzz"), max_examples=12)
@given(file=csv_file())
def test_train_on_hostile_files_ends_in_one_line(file):
    """Real Keras: few cases, most of which end before training (bad files)."""
    name, data = file
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        code, _, err = run(["train", str(path), "--target", "y", "--epochs", "1"])
        count_case("train")
        check_run("train", code, err, (0, 1, 2))
        assert path.read_bytes() == data
        assert sorted(p.name for p in Path(folder).iterdir()) == [name]
