"""Hostile files and output paths against the commands, in this process through the
command's ``main`` (a sample also in real processes): every run ends with exit 0, 1 or 2
and, for 2, one line; never a traceback, a "bug" line or a signal; the inputs are
unchanged, and no file is left but the complete outputs of a run that succeeded."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stablefit.cli.main import EXIT_BUG, main

from .choices import Choices, HypothesisChoices, SeededChoices
from .conftest import count_case, run_seeded
from .strategies import csv_file, data_file, strategy

# The cases per test: the seeded ones are the bulk (about 7 ms each in this process);
# hypothesis's (which shrink a failure to a small file) and real processes cost far more.
N_SEEDED_FILES = 9800
N_HYPOTHESIS_FILES = 40
N_PROCESS_FILES = 6
N_SEEDED_TRAIN_FILES = 16

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


FIT_OPTIONS = [[], [], ["--drop-non-numeric"], ["--missing", "drop"], ["--missing", "impute"],
               ["--cov-type", "hc1"], ["--no-intercept"]]  # fmt: skip
DOCTOR_OPTIONS = [[], ["--optimizer", "sgd"], ["--learning-rate", "1e6"], ["--dtype", "float64"],
                  ["--batch-size", "1"], ["--framework", "torch"]]  # fmt: skip


# What --exclude is given: the generated tables' usual names (x, x1, ..., the target y),
# pandas' and blank placeholders, a name no table has, one name twice, a name with a comma.
EXCLUDED = ["x", "x1", "x1,x2", "y", "x,x1,x2,x3", "Unnamed: 0", "nope", "x1,x1", " x1 ",
            "x,", "x,y", "crème", "a b"]  # fmt: skip


def column_options(c: Choices, command: str) -> list[str]:
    """Column options for ``command``, drawn after every other choice of a case (the
    seeded cases drawn before these options existed keep their files and options):
    --exclude for fit, doctor and train one time in four, and doctor's --drop-non-numeric."""
    args = ["--exclude", c.choice(EXCLUDED)] if c.integer(0, 3) == 0 else []
    if command == "doctor" and c.integer(0, 3) == 0:
        args.append("--drop-non-numeric")
    return args


def command_line(c: Choices, data: Path, model: Path) -> tuple[list[str], list[str]]:
    """A command on ``data`` with options chosen by ``c``; and the names of its outputs."""
    command = c.choice(["fit", "doctor", "predict"])
    folder = data.parent
    if command == "predict":
        args = ["predict", str(model), str(data), "-o", str(folder / "p.csv")]
        args += ["--intervals"] * c.integer(0, 1)
        return args, ["p.csv"]
    args = [command, str(data), "--target", "y", "--json", str(folder / "out.json")]
    outputs = ["out.json"]
    if command == "fit":
        args += c.choice(FIT_OPTIONS)
        if c.integer(0, 3) == 0:
            args += ["--save", str(folder / "m.json")]
            outputs.append("m.json")
    else:
        args += ["--epochs", str(c.integer(1, 3)), *c.choice(DOCTOR_OPTIONS)]
    return args + column_options(c, command), outputs


def check_file_case(
    c: Choices, file: tuple[str, bytes], model: Path, folder: Path
) -> tuple[list[str], int, str]:
    """``file`` written in the empty ``folder`` and a command run on it: one ending, the
    file unchanged, and after success all the outputs (complete), after an error none.
    Returns the command line, its exit code and its standard error."""
    name, data = file
    path = folder / name
    path.write_bytes(data)
    args, outputs = command_line(c, path, model)
    code, _, err = run(args)
    count_case(args[0])
    check_run(args[0], code, err, (0, 1, 2) if args[0] == "doctor" else (0, 2))
    after = snapshot(folder)
    assert after.pop(name) == data  # the input, unchanged
    if code == 2:
        assert not after, after.keys()
        return args, code, err
    assert sorted(after) == sorted(outputs), (after.keys(), outputs)
    for output, text in after.items():
        if output.endswith(".json"):
            json.loads(text)  # complete
        else:
            assert text.startswith(b"prediction") and text.endswith(b"\n"), text[-200:]
    return args, code, err


@settings(settings.get_profile("fuzz"), max_examples=N_HYPOTHESIS_FILES)
@given(file=strategy(data_file), options=st.data())
def test_hostile_files_end_in_one_line(file, options, model):
    with tempfile.TemporaryDirectory() as folder:
        check_file_case(HypothesisChoices(options.draw), file, model, Path(folder))


def empty(folder: Path) -> None:
    for path in folder.iterdir():
        path.unlink()


def test_hostile_files_end_in_one_line_seeded(model, scratch):
    """The bulk of the command runs: the same seeded files and command lines every run."""

    def check(c: Choices) -> None:
        try:
            check_file_case(c, data_file(c), model, scratch)
        finally:
            empty(scratch)

    run_seeded(check, first_seed=0, count=N_SEEDED_FILES)


LAUNCH = "import sys, stablefit_cli; sys.argv[0] = 'stablefit'; stablefit_cli.run()"


def run_process(c: Choices, folder: Path, model: Path) -> None:
    """One seeded file through a real ``stablefit`` process: its exit is a code, never a
    signal, with the same promises as in this process."""
    name, data = data_file(c)
    (folder / name).write_bytes(data)
    args, outputs = command_line(c, folder / name, model)
    done = subprocess.run(
        [sys.executable, "-c", LAUNCH, *args], capture_output=True, timeout=120, check=False
    )
    count_case(f"{args[0]} (process)")
    err = done.stderr.decode("utf-8", "replace")
    assert done.returncode >= 0, f"killed by signal {-done.returncode}: {err}"
    check_run(args[0], done.returncode, err, (0, 1, 2) if args[0] == "doctor" else (0, 2))
    after = snapshot(folder)
    assert after.pop(name) == data
    assert sorted(after) == ([] if done.returncode == 2 else sorted(outputs)), after.keys()


def test_hostile_files_in_real_processes(model, tmp_path):
    """A sample of the seeded cases (seeds past the in-process ones) as users run them: the
    real entry point, its own standard streams, two processes at a time."""
    seeds = range(N_SEEDED_FILES, N_SEEDED_FILES + N_PROCESS_FILES)
    folders = [tmp_path / str(seed) for seed in seeds]
    for folder in folders:
        folder.mkdir()

    def check(seed: int, folder: Path) -> None:
        try:
            run_process(SeededChoices(seed), folder, model)
        except AssertionError as error:
            raise AssertionError(f"seeded case {seed}: {error}") from error

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(check, seeds, folders))


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


@settings(settings.get_profile("fuzz"), max_examples=120)
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
    the standard error is given as inf, and a note says so instead of a RuntimeWarning (and
    no longer that the coefficient is exact: the certificate says how many digits it has)."""
    data = tmp_path / "tiny.csv"
    data.write_text(
        "x,y\n3.45584192064786e-281,-1.303157231604361\n"
        "8.216181435011583e-281,0.9053558666731177\n6e-281,0.1\n"
    )
    code, out, err = run(["fit", str(data), "--target", "y"])
    assert code == 0 and "warning" not in err, err
    said = " ".join(out.split())
    assert "The variance of 'x' is beyond float64's range" in said
    assert "standard error is given as inf" in said and "coefficient is exact" not in said


def check_train_case(file: tuple[str, bytes], folder: Path, options: list[str]) -> None:
    name, data = file
    path = folder / name
    path.write_bytes(data)
    code, _, err = run(["train", str(path), "--target", "y", "--epochs", "1", *options])
    count_case("train")
    check_run("train", code, err, (0, 1, 2))
    assert path.read_bytes() == data
    assert sorted(p.name for p in folder.iterdir()) == [name]


@pytest.mark.keras
@settings(settings.get_profile("fuzz"), max_examples=4)
@given(file=strategy(csv_file), options=st.data())
def test_train_on_hostile_files_ends_in_one_line(file, options):
    """Real Keras: few cases, most of which end before training (bad files)."""
    with tempfile.TemporaryDirectory() as folder:
        check_train_case(
            file, Path(folder), column_options(HypothesisChoices(options.draw), "train")
        )


@pytest.mark.keras
def test_train_on_hostile_files_ends_in_one_line_seeded(tmp_path):
    def check(c: Choices) -> None:
        try:
            check_train_case(data_file(c), tmp_path, column_options(c, "train"))
        finally:
            empty(tmp_path)

    run_seeded(check, first_seed=100_000, count=N_SEEDED_TRAIN_FILES)
