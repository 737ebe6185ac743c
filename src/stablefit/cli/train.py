"""``stablefit train``: train a real Keras linear model on a file, guarded, and compare.

Reads the file, forecasts the run (``stablefit.diagnose``), trains ``Dense(1)`` with the
mean squared error under :class:`~stablefit.keras.NanGuard` (unless ``--no-guard``), then
prints the trained coefficients in the data's units beside the exact least-squares fit and
what the guard did. ``--auto`` trains doctor's recommended configuration instead, with the
scaling inside the model (a Normalization layer). Exit code 0 when training ends with
finite weights and loss, 1 when it does not (or the guard had to stop it), 2 for bad input.
"""

from __future__ import annotations

import argparse
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from rich.table import Table

from stablefit.cli.columns import add_exclude_argument, excluded_columns
from stablefit.cli.outputs import add_input_argument, add_output_argument
from stablefit.cli.quiet import quiet_tensorflow
from stablefit.diagnose import diagnose
from stablefit.diagnose.checks.forecast import OPTIMIZER_NAMES
from stablefit.diagnose.findings import Diagnosis, format_number
from stablefit.diagnose.training import MAX_FORECAST_EPOCHS
from stablefit.errors import StablefitInputError, StablefitWarning
from stablefit.report.html.charts import ensure_matplotlib
from stablefit.report.terminal import PlainConsole
from stablefit.report.training import TrainingRecord

DEFAULT_OPTIMIZER = "adam"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train``."""
    train = subparsers.add_parser(
        "train",
        help="train a Keras linear model on a file, guarded against NaN",
        description="Train a real Keras Dense(1) model (mean squared error) on a CSV, "
        "Parquet or Feather file with stablefit's NanGuard, then print the coefficients in "
        "the data's units beside the exact least-squares fit. Exit code: 0 when training "
        "ends finite, 1 when it does not, 2 for unusable input.",
    )
    add_input_argument(train, "data", metavar="DATA", help="CSV, Parquet or Feather file")
    train.add_argument("--target", metavar="COL", required=True, help="the target column")
    train.add_argument(
        "--optimizer",
        choices=sorted(OPTIMIZER_NAMES),
        type=str.lower,
        default=DEFAULT_OPTIMIZER,
        help=f"the Keras optimizer (default: {DEFAULT_OPTIMIZER})",
    )
    train.add_argument(
        "--learning-rate", type=float, metavar="LR", help="default: Keras's for the optimizer"
    )
    train.add_argument("--epochs", type=int, default=100, metavar="N")
    train.add_argument("--batch-size", type=int, default=32, metavar="N")
    train.add_argument(
        "--no-guard", dest="guard", action="store_false", help="train without NanGuard"
    )
    train.add_argument(
        "--auto",
        action="store_true",
        help="train doctor's recommended configuration (scaling inside the model, optimizer, "
        "learning rate, epochs) instead of the one given",
    )
    train.add_argument("--seed", type=int, default=0, help="Keras's random seed (default 0)")
    train.add_argument(
        "--drop-non-numeric",
        action="store_true",
        help="leave out text columns instead of stopping with an error",
    )
    add_exclude_argument(train)
    add_output_argument(
        train,
        "--html",
        metavar="PATH",
        help="also write the report (loss curve, the guard's events, the forecast beside "
        "them) as one self-contained HTML page",
    )
    train.set_defaults(handler=run_train)


def run_train(args: argparse.Namespace) -> int:
    _validate(args)
    if args.html:
        ensure_matplotlib()
    X, y, names = _read(
        args.data,
        args.target,
        drop_non_numeric=args.drop_non_numeric,
        exclude=excluded_columns(args),
    )
    # Paths, column names and notes may hold brackets or control characters.
    console = PlainConsole()
    diagnosis, settings = _settings(args, X, y, names, console)
    with quiet_tensorflow():
        try:
            import keras

            from stablefit.keras import NanGuard, NonFiniteTrainingError
            from stablefit.keras.linear import linear_model, mse, original_units
        except ImportError as error:
            raise StablefitInputError(
                f"stablefit train needs Keras with TensorFlow ({error}); "
                "install it with: pip install 'stablefit[keras]'"
            ) from error

        keras.utils.set_random_seed(args.seed)
        model = linear_model(
            X,
            optimizer=settings["optimizer"],
            learning_rate=settings["learning_rate"],
            standardize=settings["standardize"],
        )
    initial_loss = mse(X, y, *original_units(model))
    # An Arrow table keeps the column names in the guard's diagnosis.
    named = pa.table({name: X[:, j] for j, name in enumerate(names)})
    guard = NanGuard(data=(named, y)) if args.guard else None
    stopped_by_guard = None
    progress = _EpochProgress(console, settings["epochs"])
    with progress as advance:
        callbacks = [advance] if guard is None else [guard, advance]
        try:
            with warnings.catch_warnings():
                # The guard's events are printed below, with the comparison.
                warnings.simplefilter("ignore", StablefitWarning)
                model.fit(
                    X.astype("float32"),
                    y.astype("float32"),
                    epochs=settings["epochs"],
                    batch_size=settings["batch_size"],
                    verbose=0,
                    callbacks=callbacks,
                )
        except NonFiniteTrainingError as error:
            stopped_by_guard = str(error)

    coef, intercept = original_units(model)
    final_loss = mse(X, y, coef, intercept)
    exact = _print_comparison(console, X, y, names, coef, intercept, initial_loss, final_loss)
    _print_guard(console, guard, stopped_by_guard)
    finite = math.isfinite(final_loss) and bool(np.isfinite(coef).all())
    if not finite:
        console.print(
            "Training ended with non-finite weights or loss. Run `stablefit doctor` on the "
            "data for why, or train with the guard (drop --no-guard) or --auto."
        )
    if args.html:
        record = TrainingRecord(
            origin=str(args.data),
            losses=tuple(progress.losses),
            steps_per_epoch=math.ceil(len(y) / settings["batch_size"]),
            settings={"rows": len(y), **settings},
            events=tuple(guard.events) if guard is not None else (),
            guard=guard is not None,
            stopped=stopped_by_guard,
            diagnosis=diagnosis,
            coefficients=(
                *zip(names, map(float, coef), map(float, exact.coef), strict=True),
                ("intercept", float(intercept), float(exact.intercept)),
            ),
            final_loss=final_loss,
            optimal_loss=mse(X, y, exact.coef, exact.intercept),
        )
        args.outputs.write_text("html", record.to_html())
        console.print(f"HTML report written to {args.html}")
    return 0 if finite and stopped_by_guard is None else 1


def _validate(args: argparse.Namespace) -> None:
    if args.epochs < 1:
        raise StablefitInputError(f"--epochs {args.epochs}: give at least 1 epoch (e.g. 100)")
    if args.batch_size < 1:
        raise StablefitInputError(f"--batch-size {args.batch_size}: give at least 1 (e.g. 32)")
    if args.learning_rate is not None and not 0 < args.learning_rate < math.inf:
        raise StablefitInputError(
            f"--learning-rate {args.learning_rate}: give a positive learning rate (e.g. 0.01)"
        )
    if not 0 <= args.seed < 2**32:
        raise StablefitInputError(f"--seed {args.seed}: give a seed from 0 to 2**32 - 1")


def _read(
    path: str, target: str, *, drop_non_numeric: bool, exclude: list[str]
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """The whole file as float64 arrays; rows with NaN/inf are an error naming them."""
    from stablefit.io import open_source

    if Path(path).is_dir():
        raise StablefitInputError(f"{path}: a directory; give one CSV, Parquet or Feather file")
    if not Path(path).is_file():
        raise StablefitInputError(f"{path}: no such file; give a CSV, Parquet or Feather file")
    source = open_source(path, target=target, drop_non_numeric=drop_non_numeric, exclude=exclude)
    batches = list(source.batches())
    if not batches:
        raise StablefitInputError(f"{path}: no data rows to train on")
    X = np.concatenate([batch.X for batch in batches])
    y = np.concatenate([batch.y for batch in batches])
    bad = np.flatnonzero(~(np.isfinite(X).all(axis=1) & np.isfinite(y)))
    if bad.size:
        raise StablefitInputError(
            f"{path}: {source.schema.format_rows(bad, total=bad.size)} "
            f"{'holds' if bad.size == 1 else 'hold'} NaN, inf or "
            "missing values: the command compares training with the exact fit of the same "
            "rows, which needs every value; drop or fix those rows (`stablefit doctor` names "
            "the columns), or train in Python, where NanGuard leaves them out"
        )
    _refuse_beyond_float32(path, X, y, source.schema, target)
    return X, y, source.schema.feature_names


FLOAT32_MAX = float(np.finfo(np.float32).max)


def _refuse_beyond_float32(
    path: str, X: np.ndarray, y: np.ndarray, schema: Any, target: str
) -> None:
    """Keras trains in float32: a value beyond its range would be inf from the start."""
    beyond = np.column_stack([np.abs(X) > FLOAT32_MAX, np.abs(y) > FLOAT32_MAX])
    if not beyond.any():
        return
    names = [*schema.feature_names, target]
    columns = ", ".join(repr(names[j]) for j in np.flatnonzero(beyond.any(axis=0)))
    rows = np.flatnonzero(beyond.any(axis=1))
    raise StablefitInputError(
        f"{path}: column(s) {columns} hold values beyond float32's range (3.4e38) at "
        f"{schema.format_rows(rows, total=rows.size)}; Keras trains in float32, where "
        "they are inf. Rescale those columns (divide by a power of ten), or fit them exactly "
        "with `stablefit fit`."
    )


def _settings(
    args: argparse.Namespace,
    X: np.ndarray,
    y: np.ndarray,
    names: tuple[str, ...],
    console: PlainConsole,
) -> tuple[Diagnosis, dict[str, Any]]:
    """The forecast, and the configuration to train: as given, or doctor's recommendation
    with --auto."""
    diagnosis = diagnose(
        X,
        y,
        optimizer=args.optimizer,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        epochs=min(args.epochs, MAX_FORECAST_EPOCHS),
        feature_names=names,
    )
    forecast = diagnosis.training
    given = (
        f"{OPTIMIZER_NAMES[forecast.optimizer]} lr {format_number(forecast.learning_rate)}, "
        f"{args.epochs} epochs, batch {args.batch_size}"
    )
    console.print(
        f"stablefit train {args.data}: {len(y)} rows, features "
        f"{', '.join(diagnosis.facts.feature_names)}, target {args.target}"
    )
    console.print(f"forecast for {given}: {_outcome(forecast)}")
    if not args.auto:
        return diagnosis, {
            "optimizer": args.optimizer,
            "learning_rate": args.learning_rate,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "standardize": False,
        }
    recommended = forecast.recommended
    if recommended is None:
        raise StablefitInputError(
            "--auto: stablefit found no configuration to recommend for these data "
            "(see `stablefit doctor`); train without --auto"
        )
    standardize = recommended.scaling.endswith("standardize")
    console.print(
        f"--auto: {'standardized inside the model (Normalization layer), ' if standardize else ''}"
        f"{OPTIMIZER_NAMES[recommended.optimizer]} lr {format_number(recommended.learning_rate)}, "
        f"{recommended.epochs} epochs, batch {recommended.batch_size} ({recommended.note})"
    )
    return diagnosis, {
        "optimizer": recommended.optimizer,
        "learning_rate": recommended.learning_rate,
        "epochs": recommended.epochs,
        "batch_size": recommended.batch_size,
        "standardize": standardize,
    }


def _outcome(forecast: Any) -> str:
    if forecast.outcome == "diverges":
        bound = forecast.max_stable_learning_rate
        # No bound when no learning rate helps (the loss's squares overflow float32).
        stable = "" if bound is None else f"; stable for lr < {format_number(bound)}"
        return f"diverges (non-finite loss at epoch {forecast.first_nonfinite_epoch}{stable})"
    final = forecast.predicted_final_loss
    loss = "" if final is None else f", final loss about {format_number(final)}"
    return f"{forecast.outcome}{loss}"


class _EpochProgress:
    """A rich progress bar advanced by a Keras callback at each epoch's end."""

    def __init__(self, console: PlainConsole, epochs: int) -> None:
        # Only this command shows progress: the others do not load it.
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.progress = Progress(
            TextColumn("training"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.task = self.progress.add_task("train", total=epochs, loss="-")
        self.losses: list[float] = []  # each epoch's loss, as Keras's History holds it

    def __enter__(self) -> Any:
        import keras

        self.progress.start()
        progress, task, losses = self.progress, self.task, self.losses

        class Advance(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
                loss = (logs or {}).get("loss")
                losses.append(float("nan") if loss is None else float(loss))
                shown = "-" if loss is None else format_number(float(loss))
                progress.update(task, completed=epoch + 1, loss=shown)

        return Advance()

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()


def _print_comparison(
    console: PlainConsole,
    X: np.ndarray,
    y: np.ndarray,
    names: tuple[str, ...],
    coef: np.ndarray,
    intercept: float,
    initial_loss: float,
    final_loss: float,
) -> Any:
    """Print the trained coefficients beside the exact fit; return the exact fit."""
    import stablefit
    from stablefit.keras.linear import mse

    exact = stablefit.fit(X, y, feature_names=list(names))
    optimal_loss = mse(X, y, exact.coef, exact.intercept)
    table = Table(title="coefficients in the data's units", title_justify="left")
    table.add_column("term")
    table.add_column("trained (Keras)", justify="right")
    table.add_column("exact (stablefit.fit)", justify="right")
    for name, trained, best in zip(names, coef, exact.coef, strict=True):
        table.add_row(name, format_number(trained, 6), format_number(best, 6))
    table.add_row("intercept", format_number(intercept, 6), format_number(exact.intercept, 6))
    table.add_row("loss (MSE)", format_number(final_loss, 4), format_number(optimal_loss, 4))
    console.print(table)
    for note in exact.notes:
        console.print(f"exact fit: {note}")
    if math.isfinite(final_loss) and math.isfinite(initial_loss) and initial_loss > optimal_loss:
        share = max(final_loss - optimal_loss, 0.0) / (initial_loss - optimal_loss)
        console.print(
            f"excess loss over the optimum: {format_number(100 * share, 3)}% of its initial "
            f"value ({format_number(initial_loss, 4)} before training)"
        )
    return exact


def _print_guard(console: PlainConsole, guard: Any, stopped: str | None) -> None:
    if guard is None:
        console.print("NanGuard: off (--no-guard)")
        return
    if stopped is not None:
        for line in stopped.splitlines():  # the console shows a line break as an escape
            console.print(line)
        return
    if not guard.events:
        console.print("NanGuard: no non-finite loss or weight during training, no loss spike")
        return
    console.print(f"NanGuard: {len(guard.events)} event(s), training went on:")
    for event in guard.events:
        console.print(f"  - {event.describe()}")
