"""What README.md and docs/ tell a user to type is what the code accepts and does: every
command line in them parses with the command's own parser, every ``--flag`` they name
exists, the finding codes they document are the ones the checks emit, every key of the
diagnosis JSON is documented, the README's Python snippets run (and give the values their
comments show), and the docstrings' examples run."""

from __future__ import annotations

import ast
import doctest
import importlib
import inspect
import json
import re
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import stablefit
from stablefit.cli.main import build_parser
from stablefit.errors import StablefitWarning

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "stablefit"
README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCS = {path.name: path.read_text(encoding="utf-8") for path in sorted(ROOT.glob("docs/*.md"))}
FINDINGS = DOCS["findings.md"]
SEED = SOURCE / "data" / "seed_example1.csv"


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def readme_block(language: str, first_line: str) -> str:
    (block,) = [b for b in code_blocks(README, language) if b.startswith(first_line)]
    return block


def command_lines() -> list[str]:
    """Every ``stablefit ...`` command of the docs' shell blocks."""
    lines = []
    for text in (README, *DOCS.values()):
        for block in code_blocks(text, "bash"):
            for line in block.splitlines():
                command = line.split(" # ")[0].strip()
                for part in command.split("&&"):
                    if part.strip().startswith("stablefit "):
                        lines.append(part.strip())
    return lines


@pytest.mark.parametrize("line", command_lines())
def test_every_command_line_in_the_docs_parses(line: str) -> None:
    # The command's own parser: an unknown or misspelt flag, a value outside its choices,
    # a missing required option all end in SystemExit.
    build_parser().parse_args(shlex.split(line)[1:])


def test_every_flag_the_docs_name_exists() -> None:
    # Prose names flags without their command ("--exclude COL[,COL] (fit, doctor,
    # train)"); each must be some command's. The benchmarks' section names the benchmark
    # scripts' own options, and is left out.
    user_docs = README.split("\n## Benchmarks")[0] + "".join(DOCS.values())
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", user_docs))
    parser = build_parser()
    (commands,) = [a for a in parser._actions if a.dest == "command"]
    known = {
        flag
        for subparser in commands.choices.values()
        for action in subparser._actions
        for flag in action.option_strings
    }
    assert named and named <= known, sorted(named - known)


def emitted_codes() -> set[str]:
    codes = set()
    for path in SOURCE.rglob("*.py"):
        codes |= set(re.findall(r"[\"'](SF\d{3})[\"']", path.read_text(encoding="utf-8")))
    return codes


def test_the_findings_table_documents_exactly_the_codes_the_checks_emit() -> None:
    documented = set(re.findall(r"^\| (SF\d{3}) \|", FINDINGS, re.M))
    assert documented == emitted_codes()
    first, last = re.search(r"\(`(SF\d{3})`…`(SF\d{3})`\)", README).groups()
    doctor_codes = {code for code in documented if code < "SF300"}  # SF30x: preflight
    assert (first, last) == (min(doctor_codes), max(doctor_codes))


def test_every_key_of_the_diagnosis_json_is_documented() -> None:
    written = stablefit.diagnose(str(SEED), target="y", optimizer="sgd").to_dict()
    keys = set(written) | set(written["data"]) | set(written["settings"])
    keys |= set(written["training"]) | set(written["training"]["recommended"])
    keys |= set(written["findings"][0])
    undocumented = {
        key for key in keys if f"`{key}`" not in FINDINGS and f'"{key}"' not in FINDINGS
    }
    assert not undocumented, sorted(undocumented)
    assert written["schema_version"] == int(re.search(r"`schema_version` (\d+)", FINDINGS)[1])


def agrees(documented: object, real: object, where: str = "") -> None:
    """``documented`` (a docs example) is ``real`` but for what it elides: keys named
    "...", text ending in "...", numbers rounded to three digits."""
    if isinstance(documented, dict):
        for key, value in documented.items():
            if key != "...":
                assert key in real, where + key
                agrees(value, real[key], f"{where}{key}.")
    elif isinstance(documented, list) and documented and isinstance(documented[0], dict):
        for item in documented:  # findings: the one of the same code
            (same,) = [r for r in real if r["code"] == item["code"]]
            agrees(item, same, f"{where}{item['code']}.")
    elif isinstance(documented, str) and documented.endswith("..."):
        assert real.startswith(documented[:-3].rstrip()), (where, real)
    elif isinstance(documented, float):
        assert real == pytest.approx(documented, rel=5e-3), (where, real)
    else:
        assert real == documented, (where, real)


def test_the_json_example_of_the_findings_doc_is_what_doctor_writes(monkeypatch) -> None:
    (example,) = code_blocks(FINDINGS, "json")
    monkeypatch.chdir(SEED.parent)
    written = stablefit.diagnose(SEED.name, target="y", optimizer="sgd").to_dict()
    agrees(json.loads(example), json.loads(json.dumps(written)))


def test_the_guard_vocabulary_in_the_readme_is_the_guards() -> None:
    # GuardEvent's fields, its triggers and actions, and the table of causes.
    import dataclasses

    from stablefit.guard import ACTIONS, CAUSES, TRIGGERS, GuardEvent

    sentence = README[README.index("`GuardEvent` is a plain dataclass") :].split(". ")[0]
    fields = re.findall(r"`(\w+)`", re.sub(r"\([^)]*\)", "", sentence))
    assert fields[1:] == [field.name for field in dataclasses.fields(GuardEvent)]
    listed = {
        name: re.search(rf"`{name}`\s*\(([^)]*)\)", sentence)[1] for name in ("trigger", "action")
    }
    assert re.findall(r"`(\w+)`", listed["trigger"]) == list(TRIGGERS)
    assert re.findall(r"`(\w+)`", listed["action"]) == list(ACTIONS)
    table = README[README.index("| cause | found by | remedy |") :].split("\n\n")[0]
    assert re.findall(r"^\| `(\w+)` \|", table, re.M) == list(CAUSES)


def test_every_file_the_docs_cite_exists() -> None:
    cited = set()
    for text in (README, *DOCS.values()):
        cited |= set(re.findall(r"`((?:tests|benchmarks|stablefit|solve)/[\w/.-]+\.py)`", text))
    missing = [
        path
        for path in cited
        if not any((base / path).exists() for base in (ROOT, ROOT / "src", SOURCE))
    ]
    assert cited and not missing, missing


def test_every_extra_the_docs_name_is_in_pyproject() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    section = pyproject.split("[project.optional-dependencies]")[1].split("\n[")[0]
    extras = set(re.findall(r"^([\w-]+) = \[", section, re.M))
    named = set()
    for text in (README, *DOCS.values()):
        named |= {
            e for group in re.findall(r"\.?stablefit\[([\w,-]+)\]", text) for e in group.split(",")
        }
        named |= {e for group in re.findall(r"'\.\[([\w,-]+)\]'", text) for e in group.split(",")}
    assert named and named <= extras, sorted(named - extras)


def test_ci_runs_exactly_the_readmes_test_command() -> None:
    (command,) = [b.strip() for b in code_blocks(README, "bash") if "pytest" in b]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()
    assert ci[-1] == command


def run_snippet(block: str, namespace: dict) -> None:
    """Runs a README block statement by statement; a statement whose comment is a Python
    literal (``outcome  # "diverges"``) must give that value."""
    for statement in ast.parse(block).body:
        code = ast.get_source_segment(block, statement)
        line = block.splitlines()[statement.end_lineno - 1]
        comment = line.split("#", 1)[1].strip() if "#" in line else ""
        try:
            expected = ast.literal_eval(comment)
        except (ValueError, SyntaxError):
            expected = None
        if isinstance(statement, ast.Expr):
            value = eval(compile(code, "README.md", "eval"), namespace)
            if expected is not None:
                assert value == expected, (code, value, expected)
        else:
            exec(compile(code, "README.md", "exec"), namespace)


def test_the_readme_forecast_snippet_gives_what_its_comments_say() -> None:
    seed = pd.read_csv(SEED)  # the seed's Example 1, which the README speaks of
    namespace = {"X": seed[["x1", "x2"]].to_numpy(), "y": seed["y"].to_numpy()}
    run_snippet(readme_block("python", "import stablefit\ndiagnosis = "), namespace)
    assert "converg" in namespace["diagnosis"].training.recommended.note


def test_the_readme_fit_snippets_run() -> None:
    rng = np.random.default_rng(0)
    n = 120
    X = pd.DataFrame(rng.normal(size=(n, 3)) * [1.0, 2.0, 3.0], columns=["x1", "x2", "x3"])
    y = X @ [1.0, 1.0, 0.0] + rng.normal(size=n)
    panel = X.assign(invest=y, firm=np.repeat(np.arange(12), n // 12))
    namespace = {
        "stablefit": stablefit,
        "X": X,
        "y": y,
        "x": np.linspace(0.0, 1.0, n),
        "w": rng.uniform(0.5, 2.0, n),
        "df": panel,
        "X_new": X.head(5),
    }
    run_snippet(readme_block("python", "result = stablefit.fit(X, y)"), dict(namespace))
    robust = readme_block("python", 'result = stablefit.fit(df, target="invest"')
    with pytest.warns(StablefitWarning, match="take weight 1"):  # as the README says
        run_snippet(robust, namespace)
    assert namespace["result"].cov_type == "HC1"


def test_the_readme_torch_snippets_run() -> None:
    torch = pytest.importorskip("torch")
    importlib.import_module("stablefit.torch")  # the snippets name stablefit.torch
    rng = np.random.default_rng(1)
    X = rng.normal(size=(64, 3)).astype("float32")
    y = (X @ np.array([1.0, -2.0, 0.5], dtype="float32")).reshape(-1, 1)
    model = torch.nn.Linear(3, 1)
    loss_fn = torch.nn.MSELoss()
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(X), torch.from_numpy(y))
    namespace = {
        "stablefit": stablefit,
        "torch": torch,
        "X": X,
        "y": y,
        "model": model,
        "loss_fn": loss_fn,
        "optimizer": torch.optim.SGD(model.parameters(), lr=0.01),
        "loader": torch.utils.data.DataLoader(dataset, batch_size=32),
    }
    run_snippet(readme_block("python", "stablefit.diagnose(X, y, framework="), namespace)
    assert namespace["diagnosis"].training.framework == "torch"
    run_snippet(readme_block("python", "optimizer = stablefit.torch.guard("), namespace)
    assert namespace["optimizer"].events == []


PUBLIC = {
    "stablefit": ("fit", "fit_polynomial", "diagnose", "StableLinearRegression"),
    "stablefit.io": ("open_source",),
    "stablefit.summary": ("summarize",),
    "stablefit.keras": ("NanGuard", "checked", "preflight"),
    "stablefit.torch": ("guard", "preflight", "GuardCallback"),
}


def documented_parameters(doc: str) -> list[str]:
    section = re.search(r"Parameters\n-+\n(.*?)(?:\n\n[A-Z][a-z]+\n-+\n|\Z)", doc, re.S)
    heads = [line.split(" : ")[0] for line in section[1].splitlines() if line[:1].isalpha()]
    return [name.strip() for head in heads for name in head.split(",")]


@pytest.mark.parametrize(
    "name", [f"{module}.{name}" for module in PUBLIC for name in PUBLIC[module]]
)
def test_every_parameter_of_the_public_api_is_documented_under_its_own_name(name: str) -> None:
    module, attribute = name.rsplit(".", 1)
    for framework in ("keras", "torch"):
        if module == f"stablefit.{framework}":
            pytest.importorskip(framework)
    public = getattr(importlib.import_module(module), attribute)
    parameters = [p for p in inspect.signature(public).parameters if p not in ("self", "options")]
    assert sorted(documented_parameters(inspect.getdoc(public))) == sorted(parameters)


def modules_with_examples() -> list[str]:
    names = []
    for path in sorted(SOURCE.rglob("*.py")):
        if ">>> " in path.read_text(encoding="utf-8"):
            parts = path.relative_to(SOURCE.parent).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


@pytest.mark.parametrize("module", modules_with_examples())
def test_the_docstring_examples_run(module: str) -> None:
    for framework in ("keras", "torch"):
        if module.startswith(f"stablefit.{framework}"):
            pytest.importorskip(framework)
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0
