"""``stablefit doctor`` (predict a NaN loss before training, and say why) and ``stablefit demo``.

``doctor`` exits with 1 when the forecast training reaches a non-finite loss or the data
holds an error-level hazard (so that it can gate a pipeline), 0 otherwise, and 2 for input
it cannot read. ``demo`` runs the seed's three examples from the bundled CSV files: the
forecast, then (when Keras is installed) the real Keras outcome beside it, then the exact fit.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.padding import Padding
from rich.text import Text

from stablefit.cli.columns import add_exclude_argument, excluded_columns
from stablefit.cli.engine import add_engine_arguments, run_for
from stablefit.cli.outputs import add_input_argument, add_output_argument
from stablefit.cli.quiet import quiet_tensorflow
from stablefit.diagnose import diagnose
from stablefit.diagnose.checks.common import DTYPES
from stablefit.diagnose.checks.forecast import OPTIMIZER_NAMES
from stablefit.diagnose.findings import Diagnosis, format_number
from stablefit.diagnose.frameworks import FRAMEWORKS
from stablefit.errors import StablefitInputError
from stablefit.io import open_source
from stablefit.report.diagnosis import print_diagnosis
from stablefit.report.files import write_text_atomic

EPOCHS = 100
#: Where ``stablefit demo`` writes its report unless told otherwise.
DEMO_REPORT = "stablefit-demo.html"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``doctor`` and ``demo``."""
    doctor = subparsers.add_parser(
        "doctor",
        help="predict a NaN loss before training, and say why",
        description="Read the data once, report every numeric hazard, and forecast what "
        "training a linear model with the mean squared error will do: a Keras Dense(1) "
        "(default) or a PyTorch nn.Linear (--framework torch). Exit code: 1 when a "
        "non-finite loss or an error-level hazard is predicted, 0 otherwise, 2 for "
        "unusable input.",
    )
    add_input_argument(
        doctor,
        "data",
        metavar="DATA",
        help="CSV, Parquet or Feather file, or a directory or quoted glob of them read as "
        "one table",
    )
    doctor.add_argument("--target", metavar="COL", help="the target column")
    add_exclude_argument(doctor)
    doctor.add_argument(
        "--drop-non-numeric",
        action="store_true",
        help="leave out text and date columns instead of stopping with an error",
    )
    doctor.add_argument(
        "--optimizer",
        choices=sorted(OPTIMIZER_NAMES),
        type=str.lower,
        help="the optimizer (default: forecast Adam, with plain SGD beside it)",
    )
    doctor.add_argument(
        "--framework",
        choices=FRAMEWORKS,
        type=str.lower,
        default="keras",
        help="whose training to forecast: Keras's model.fit (default) or a PyTorch loop "
        "(nn.Linear, nn.MSELoss, torch.optim, DataLoader)",
    )
    doctor.add_argument(
        "--learning-rate",
        type=float,
        metavar="LR",
        help="default: the framework's for the optimizer",
    )
    doctor.add_argument("--batch-size", type=int, default=32, metavar="N")
    doctor.add_argument("--epochs", type=int, default=EPOCHS, metavar="N")
    doctor.add_argument("--momentum", type=float, default=0.0, help="SGD or RMSprop momentum")
    doctor.add_argument("--nesterov", action="store_true", help="Nesterov momentum (SGD)")
    doctor.add_argument(
        "--dampening", type=float, default=0.0, help="torch.optim.SGD's dampening (torch)"
    )
    doctor.add_argument(
        "--weight-decay",
        type=float,
        metavar="WD",
        help="the optimizer's weight decay (default: the framework's)",
    )
    doctor.add_argument(
        "--drop-last",
        action="store_true",
        help="the DataLoader drops each epoch's last, partial batch (torch)",
    )
    doctor.add_argument("--dtype", choices=DTYPES, default="float32")
    doctor.add_argument(
        "--no-intercept", dest="intercept", action="store_false", help="a model without bias"
    )
    add_output_argument(
        doctor,
        "--json",
        metavar="PATH",
        help="also write the diagnosis as JSON ('-' for stdout only)",
    )
    add_output_argument(
        doctor,
        "--html",
        metavar="PATH",
        help="also write the report as one self-contained HTML page",
    )
    add_engine_arguments(doctor)
    doctor.set_defaults(handler=run_doctor)

    demo = subparsers.add_parser(
        "demo",
        help="the seed's three examples: forecast, real Keras, exact fit",
        description="Run stablefit on the three examples of 'Why is TensorFlow's simple "
        "linear fit producing NaN loss?' (bundled CSV files): the forecast for each, the "
        "real Keras outcome beside it when Keras is installed, then the exact fit.",
    )
    demo.add_argument("--no-keras", action="store_true", help="do not train with Keras")
    demo.add_argument(
        "--html",
        metavar="PATH",
        default=DEMO_REPORT,
        help=f"where to write the HTML report (default: {DEMO_REPORT} in the current "
        "directory, or in the temporary directory when that is not writable)",
    )
    demo.set_defaults(handler=run_demo)


def exit_code(diagnosis: Diagnosis) -> int:
    """1 when a non-finite loss or an error-level hazard is predicted, else 0."""
    return 1 if diagnosis.has_errors or diagnosis.diverges else 0


def run_doctor(args: argparse.Namespace) -> int:
    if args.html:
        from stablefit.report.html.charts import ensure_matplotlib

        ensure_matplotlib()
    with run_for(args) as run:
        source = open_source(
            args.data,
            target=args.target,
            drop_non_numeric=args.drop_non_numeric,
            exclude=excluded_columns(args),
            engine=run.engine,
        )
        diagnosis = diagnose_source(run.watch(source), args)
    outputs = args.outputs
    if outputs.given("json"):
        outputs.write_text("json", diagnosis.to_json() + "\n")
    if outputs.given("html"):
        outputs.write_text("html", diagnosis.to_html())
        print(f"stablefit doctor: HTML report written to {args.html}", file=sys.stderr)
    if not outputs.uses_stdout:  # last: the reader of a pipe may stop reading early
        print_diagnosis(diagnosis)
    return exit_code(diagnosis)


def diagnose_source(source: Any, args: argparse.Namespace) -> Diagnosis:
    return diagnose(
        source,
        target=args.target,
        optimizer=args.optimizer,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        epochs=args.epochs,
        momentum=args.momentum,
        nesterov=args.nesterov,
        dtype=args.dtype,
        intercept=args.intercept,
        framework=args.framework,
        dampening=args.dampening,
        weight_decay=args.weight_decay,
        drop_last=args.drop_last,
    )


# -- demo -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoCase:
    """One of the seed's examples with the optimizer settings it uses."""

    title: str
    file: str
    scaling: str | None  # None, "standard" (StandardScaler) or "robust" (RobustScaler)
    optimizer: str
    learning_rate: float | None = None

    @property
    def scaler(self) -> str:
        names = {None: "unscaled", "standard": "StandardScaler", "robust": "RobustScaler"}
        return names[self.scaling]


DEMO_CASES = (
    DemoCase("1", "seed_example1.csv", None, "adam"),
    DemoCase("1, sgd", "seed_example1.csv", None, "sgd"),
    DemoCase("2", "seed_example2.csv", "standard", "adam", 0.01),
    DemoCase("3", "seed_example3.csv", "robust", "sgd"),
    DemoCase("3 raw", "seed_example3.csv", None, "sgd"),
)


def bundled_csv(name: str) -> Path:
    """Path of a CSV file shipped in ``stablefit/data``."""
    from importlib import resources

    return Path(str(resources.files("stablefit") / "data" / name))


def load_example(case: DemoCase) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """The example's X (scaled as the seed scales it), y and feature names."""
    path = bundled_csv(case.file)
    header = path.read_text().splitlines()[0].split(",")
    table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    X, y = table[:, :-1], table[:, -1]
    return scale(X, case.scaling), y, tuple(header[:-1])


def scale(X: np.ndarray, scaling: str | None) -> np.ndarray:
    """What scikit-learn's StandardScaler or RobustScaler (default settings) return."""
    if scaling is None:
        return X
    if scaling == "standard":
        center, spread = X.mean(axis=0), X.std(axis=0)
    else:
        q25, center, q75 = np.percentile(X, [25, 50, 75], axis=0)
        spread = q75 - q25
    return (X - center) / np.where(spread == 0, 1.0, spread)


@dataclass(frozen=True)
class KerasOutcome:
    """What Keras's History shows: the first non-finite and first NaN epoch (1-based)."""

    first_nonfinite_epoch: int | None
    first_nan_epoch: int | None
    final_loss: float
    losses: tuple[float, ...] = ()


def train_with_keras(
    X: np.ndarray,
    y: np.ndarray,
    *,
    optimizer: str,
    learning_rate: float | None,
    epochs: int = EPOCHS,
    seed: int = 0,
) -> KerasOutcome:
    """Train the seed's model for real: Dense(1), MSE, float32, CPU, fixed seed, quiet.

    The examples fit in one batch of 32, so each epoch is one ``train_on_batch`` call: the
    same update and the same loss ``model.fit`` records, without its per-epoch overhead.
    """
    if X.shape[0] > 32:
        raise ValueError("train_with_keras runs one batch per epoch: at most 32 rows")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")  # the seed's facts are CPU runs
    with quiet_tensorflow():
        import keras

        keras.utils.set_random_seed(seed)
        model = keras.Sequential([keras.Input(shape=(X.shape[1],)), keras.layers.Dense(1)])
        options: dict[str, Any] = {} if learning_rate is None else {"learning_rate": learning_rate}
        optimizer_class = getattr(keras.optimizers, OPTIMIZER_NAMES[optimizer])
        model.compile(optimizer=optimizer_class(**options), loss="mse")
        losses = np.array([float(model.train_on_batch(X, y)) for _ in range(epochs)])
    bad = np.flatnonzero(~np.isfinite(losses))
    nan = np.flatnonzero(np.isnan(losses))
    return KerasOutcome(
        first_nonfinite_epoch=int(bad[0]) + 1 if bad.size else None,
        first_nan_epoch=int(nan[0]) + 1 if nan.size else None,
        final_loss=float(losses[-1]),
        losses=tuple(float(v) for v in losses),
    )


def _forecast_cell(diagnosis: Diagnosis) -> str:
    training = diagnosis.training
    if training is None:
        return "no forecast"
    if training.outcome == "diverges" and training.first_nonfinite_epoch is None:
        return "diverges (loss still finite at the end)"
    if training.outcome == "diverges":
        low, high = training.first_nonfinite_epoch_range or (training.first_nonfinite_epoch,) * 2
        text = f"inf at epoch {low}" if low == high else f"inf at epoch {low}–{high}"
        if training.first_nan_epoch is not None:
            text += f", NaN at {training.first_nan_epoch}"
        return text
    return f"{training.outcome}: loss {format_number(training.predicted_final_loss)}"


def _optimizer_cell(diagnosis: Diagnosis) -> str:
    training = diagnosis.training
    if training is None:
        return str(diagnosis.settings["optimizer"])
    name = OPTIMIZER_NAMES[training.optimizer]
    return f"{name} lr {format_number(training.learning_rate)}"


def _keras_cell(outcome: KerasOutcome) -> str:
    if outcome.first_nonfinite_epoch is None:
        return f"loss {format_number(outcome.final_loss)}"
    text = f"inf at epoch {outcome.first_nonfinite_epoch}"
    if outcome.first_nan_epoch is not None:
        text += f", NaN at {outcome.first_nan_epoch}"
    return text


def keras_available() -> bool:
    return importlib.util.find_spec("keras") is not None and (
        importlib.util.find_spec("tensorflow") is not None
    )


def run_demo(args: argparse.Namespace) -> int:
    from rich.table import Table

    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=120)
    use_keras = not args.no_keras and keras_available()
    console.print(
        "[bold]stablefit demo[/]: the three examples of “Why is TensorFlow's simple linear "
        "fit producing NaN loss?”, each with its own optimizer settings, "
        f"{EPOCHS} epochs, batch size 32, float32.\n"
    )
    table = Table(show_lines=False)
    table.add_column("example", no_wrap=True)
    table.add_column("setting", overflow="fold")
    table.add_column("stablefit forecast", no_wrap=True)
    table.add_column("ms", no_wrap=True, justify="right")
    if use_keras:
        table.add_column("Keras (seed 0)", no_wrap=True)
    diagnoses, shown = [], []
    started = time.perf_counter()
    for case in DEMO_CASES:
        X, y, names = load_example(case)
        tick = time.perf_counter()
        diagnosis = diagnose(
            X,
            y,
            feature_names=names,
            optimizer=case.optimizer,
            learning_rate=case.learning_rate,
            epochs=EPOCHS,
        )
        elapsed_ms = (time.perf_counter() - tick) * 1e3
        diagnoses.append(diagnosis)
        row = [
            case.title,
            f"{case.scaler}, {_optimizer_cell(diagnosis)}",
            _forecast_cell(diagnosis),
            f"{elapsed_ms:.0f}",
        ]
        outcome = None
        if use_keras:
            outcome = train_with_keras(
                X, y, optimizer=case.optimizer, learning_rate=case.learning_rate
            )
            row.append(_keras_cell(outcome))
        table.add_row(*row)
        shown.append((row, diagnosis, outcome))
    console.print(table)
    optima = [d.training.optimal_loss for d in diagnoses if d.training is not None]
    console.print(
        f"The best loss possible (the least-squares optimum) is at most "
        f"{format_number(max(optima))} in every example: y = 10·x1 exactly."
    )
    if not use_keras:
        reason = "--no-keras" if args.no_keras else "Keras is not installed"
        console.print(f"[dim]Real Keras runs skipped ({reason}).[/]")
    else:
        seconds = time.perf_counter() - started
        console.print(f"[dim]Forecasts and Keras runs took {seconds:.1f} s.[/]")
    console.print()
    _print_why(console, diagnoses[1])
    fit = _print_exact_fit(console)
    _write_demo_report(console, args.html, shown, fit)
    return 0


def _write_demo_report(console: Console, path: str, shown: list, fit: Any) -> None:
    """The demo's HTML report, where asked, else beside the user or in the temporary
    directory; says where."""
    from stablefit.report.html.charts import ensure_matplotlib
    from stablefit.report.html.demo import DemoCase as ReportCase
    from stablefit.report.html.demo import demo_page

    try:
        ensure_matplotlib()
    except StablefitInputError as error:
        console.print(f"[dim]No HTML report: {error}[/]")
        return
    cases = [
        ReportCase(
            title=row[0],
            setting=row[1],
            forecast=row[2],
            keras=row[4] if outcome is not None else "not run",
            diagnosis=diagnosis,
            keras_losses=outcome.losses if outcome is not None else None,
        )
        for row, diagnosis, outcome in shown
    ]
    page = demo_page(cases, detailed=1, fit=fit)
    target = Path(path)
    if path == DEMO_REPORT and not os.access(target.resolve().parent, os.W_OK):
        target = Path(tempfile.gettempdir()) / DEMO_REPORT
    write_text_atomic(target, page)
    console.print(
        f"HTML report: {target.resolve()} (open it in a browser)", highlight=False, markup=False
    )


def _print_why(console: Console, diagnosis: Diagnosis) -> None:
    console.print("[bold underline]Why Example 1 fails with SGD[/]")
    for finding in diagnosis.findings:
        line = Text(f"{finding.code} {finding.title}: ", style="bold")
        line.append(finding.message, style="")
        console.print(Padding(line, (0, 0, 0, 2), expand=False))
    console.print()


def _print_exact_fit(console: Console) -> Any:
    import stablefit

    console.print("[bold underline]The exact fit of Example 1 (stablefit.fit)[/]")
    result = stablefit.fit(str(bundled_csv("seed_example1.csv")), target="y")
    console.print(str(result.summary()), highlight=False)
    console.print(
        "[dim]Try it on your data: stablefit doctor DATA.csv --target COL --optimizer sgd[/]"
    )
    return result
