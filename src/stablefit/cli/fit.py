"""``stablefit fit`` (the exact linear fit of a file) and ``stablefit predict``.

Both read files in bounded batches (:func:`stablefit.io.open_source`), never modify them,
and write every output file atomically. Bad input ends with a one-line message and exit
code 2 (see :mod:`stablefit.cli.main`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from stablefit.cli.columns import add_exclude_argument, excluded_columns
from stablefit.cli.engine import add_engine_arguments, run_for
from stablefit.cli.outputs import add_input_argument, add_output_argument
from stablefit.cov_type import COV_TYPES
from stablefit.errors import StablefitInputError
from stablefit.io import Schema, Source, open_source
from stablefit.missing import MISSING_CHOICES
from stablefit.report.plain import visible_lines
from stablefit.report.terminal import PlainConsole

if TYPE_CHECKING:
    from stablefit.solve.prediction import UndefinedPredictions

# Rows without a prediction named in the warning.
LISTED_ROWS = 20
DATA_HELP = (
    "CSV (.csv, .tsv; .csv.gz, .csv.zst compressed), Parquet or Feather (Arrow IPC) file, "
    "or a directory or "
    "quoted glob of them ('data/part-*.parquet') read as one table"
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``fit`` and ``predict``."""
    fit = subparsers.add_parser(
        "fit",
        help="the exact least-squares fit of a CSV, Parquet or Feather file",
        description="Fit the target column on every other numeric column, exactly: "
        "coefficients in the data's units with standard errors, t, p and 95% intervals, "
        "R², the residual SD, and a certificate of how many digits can be trusted. "
        "Exit code 0 on success, 2 for unusable input.",
    )
    add_input_argument(fit, "data", metavar="DATA", help=DATA_HELP)
    fit.add_argument("--target", required=True, metavar="COL", help="the target column")
    fit.add_argument(
        "--missing",
        choices=MISSING_CHOICES,
        default="error",
        help="rows with NaN or inf: stop with an error naming them (default), drop them, or "
        "impute features with their column median",
    )
    fit.add_argument(
        "--no-intercept", dest="intercept", action="store_false", help="fit without a constant"
    )
    fit.add_argument(
        "--drop-non-numeric",
        action="store_true",
        help="leave out text and date columns instead of stopping with an error",
    )
    fit.add_argument(
        "--cov-type",
        type=str.lower,
        choices=[name.lower() for name in COV_TYPES],
        metavar="TYPE",
        help="covariance behind standard errors, tests and intervals: nonrobust (default), "
        "hc0, hc1 (Stata's robust), hc2, hc3, or cluster (default with --cluster)",
    )
    add_exclude_argument(fit)
    fit.add_argument(
        "--cluster",
        metavar="COL[,COL]",
        help="cluster-robust standard errors by one column, or two (two-way); those "
        "columns are not features and may hold text",
    )
    fit.add_argument(
        "--weights",
        metavar="COL",
        help="weighted least squares with this column's positive weights (not a feature)",
    )
    fit.add_argument(
        "--normal",
        dest="use_t",
        action="store_false",
        help="p-values and intervals from the normal distribution (statsmodels' default "
        "for robust covariances) instead of Student's t",
    )
    add_output_argument(
        fit,
        "--json",
        metavar="PATH",
        help="also write the fit as JSON ('-' for JSON on stdout only)",
    )
    add_output_argument(
        fit,
        "--save",
        metavar="MODEL.json",
        help="save the model for 'stablefit predict' (JSON; '-' for stdout only)",
    )
    add_output_argument(
        fit, "--html", metavar="PATH", help="also write the report as one self-contained HTML page"
    )
    add_engine_arguments(fit)
    fit.set_defaults(handler=run_fit)

    predict = subparsers.add_parser(
        "predict",
        help="predictions of a saved model for each row of a file",
        description="Predict the target for each row of DATA with a model saved by "
        "'stablefit fit --save'. DATA needs the model's feature columns (by name, in any "
        "order; other columns are ignored). Writes a CSV with one 'prediction' per row, in "
        "the rows' order; a row with a missing feature value, or whose prediction "
        "overflows, gets an empty prediction and a warning. "
        "With --intervals, also the standard error of each predicted mean and confidence and "
        "prediction intervals from the fit's covariance; after a weighted fit, the "
        "prediction intervals need each row's weight (--weights).",
    )
    add_input_argument(
        predict, "model", metavar="MODEL.json", help="a model saved by 'stablefit fit'"
    )
    add_input_argument(predict, "data", metavar="DATA", help=DATA_HELP)
    add_output_argument(
        predict,
        "-o",
        "--output",
        metavar="OUT.csv",
        default="-",
        help="write here instead of to stdout ('-': stdout); a name ending in .parquet, "
        ".feather or .arrow writes that format, .tsv tab-separated, .gz or .zst compressed",
    )
    predict.add_argument(
        "--intervals",
        action="store_true",
        help="add columns mean_se, mean_ci_lower, mean_ci_upper, obs_ci_lower, obs_ci_upper "
        "(as statsmodels' summary_frame)",
    )
    predict.add_argument(
        "--weights",
        metavar="COL",
        help="with --intervals: each row's weight, as the fit's --weights (a new "
        "observation's variance is σ²/weight); needed after a weighted fit",
    )
    predict.add_argument(
        "--alpha",
        type=float,
        default=0.05,
        help="1 - confidence level of the intervals (default 0.05)",
    )
    predict.set_defaults(handler=run_predict)


# -- fit ------------------------------------------------------------------------------------


def run_fit(args: argparse.Namespace) -> int:
    from stablefit.pipeline import default_cov_type, fit_source
    from stablefit.rowdata import refuse_the_target, row_data

    if args.html:
        from stablefit.report.html.charts import ensure_matplotlib

        ensure_matplotlib()
    clusters = None
    if args.cluster is not None:
        clusters = [name.strip() for name in args.cluster.split(",")]
        if not 1 <= len(clusters) <= 2 or not all(clusters):
            raise StablefitInputError(
                f"--cluster {args.cluster!r}: name one column, or two separated by a comma"
            )
    refuse_the_target(args.target, args.weights, clusters or ())
    with run_for(args) as run:
        source = open_source(
            args.data,
            target=args.target,
            drop_non_numeric=args.drop_non_numeric,
            engine=run.engine,
            exclude=[
                *excluded_columns(args),
                *(name for name in (args.weights, *(clusters or ())) if name),
            ],
        )
        result = fit_source(
            run.watch(source),
            intercept=args.intercept,
            missing=args.missing,
            rows=row_data(args.data, args.weights, clusters, None),
            cov_type=default_cov_type(args.cov_type, clusters),
            use_t=args.use_t,
        )
    outputs = args.outputs
    if outputs.given("json"):
        payload = {**result.to_dict(), "data": str(args.data), **dropped_columns(source.schema)}
        outputs.write_text("json", to_json(payload))
    if outputs.given("save"):
        outputs.write_text("save", result.to_model().to_json())
    if outputs.given("html"):
        from stablefit.report.html.fit import fit_page

        outputs.write_text("html", fit_page(result, origin=str(args.data)))
        print(f"stablefit fit: HTML report written to {args.html}", file=sys.stderr)
    if not outputs.uses_stdout:  # last: the reader of a pipe may stop reading early
        print_result(result, source.schema)
    return 0


def dropped_columns(schema: Schema) -> dict[str, dict[str, str]]:
    return {"dropped_columns": {column.name: column.reason for column in schema.dropped}}


def print_result(result: Any, schema: Schema) -> None:
    """The fit's table: rich on a terminal, plain fixed-width text otherwise."""
    console = PlainConsole()
    if console.is_terminal:
        from stablefit.report.fit import print_fit

        console.print(schema.origin, style="bold")
        print_fit(result, console)
        return
    print(visible_lines(f"{schema.origin}\n{result.summary()}"))


def to_json(payload: dict) -> str:
    """Strict JSON: a non-finite number becomes null (the notes say why)."""
    return json.dumps(finite(payload), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# -- predict --------------------------------------------------------------------------------


def load_model(path: str) -> Any:
    """The model saved by ``stablefit fit --save`` (format errors are input errors)."""
    from stablefit.model import LinearModel

    return LinearModel.load(path)


def run_predict(args: argparse.Namespace) -> int:
    model = load_model(args.model)
    source = open_source(args.data, columns=list(model.feature_names))
    alpha = args.alpha if args.intervals else None
    if alpha is not None and not 0.0 < alpha / 2.0 < 0.5:  # half of 5e-324 is 0
        raise StablefitInputError(
            f"--alpha {alpha}: it must lie strictly between 0 and 1 (and above 1e-323)"
        )
    if alpha is not None and model.prediction_basis is None:
        raise StablefitInputError(
            f"{args.model}: the model holds no covariance for intervals; save it again with "
            "'stablefit fit DATA --target COL --save MODEL.json'"
        )
    source = with_new_weights(args, model, source)
    with args.outputs.open("output") as stream:
        undefined = write_predictions(model, source, stream, alpha, name=args.output)
    if len(undefined):
        what = "prediction" if alpha is None else "prediction or interval"
        print(
            f"stablefit predict: warning: {len(undefined)} row(s) have no {what}: "
            f"{undefined.describe(source.schema.format_rows, what)}; what is not finite is "
            "left empty.",
            file=sys.stderr,
        )
    return 0


def with_new_weights(args: argparse.Namespace, model: Any, source: Source) -> Source:
    """``source`` with each row's weight from ``--weights`` attached, checked before any
    output; refused without ``--intervals`` (predictions do not depend on weights) and
    required for the intervals of a weighted fit (a new observation's variance is σ²/w)."""
    from stablefit.rowdata import LISTED_ROWS as LISTED_WEIGHTS
    from stablefit.rowdata import row_data, with_rows

    fitted_with = model.prediction_basis and model.prediction_basis.weights_name
    if args.weights is None:
        if args.intervals and fitted_with:
            raise StablefitInputError(
                f"{args.model}: the model was fitted with weights {fitted_with!r}, and a new "
                "observation's interval depends on its weight (variance σ²/weight): give each "
                "row's weight with --weights COL (a column of DATA, as the fit's)"
            )
        return source
    if not args.intervals:
        raise StablefitInputError(
            "--weights serves the intervals of new observations; add --intervals (the "
            "predictions themselves do not depend on weights)"
        )
    rows = row_data(args.data, args.weights, None, None)
    assert rows is not None
    bad: list[int] = []
    n_bad = 0
    for chunk in rows.chunks():
        with np.errstate(invalid="ignore"):
            found = np.flatnonzero(~(chunk.weights > 0) | np.isinf(chunk.weights))
        n_bad += found.size
        bad.extend((found[: LISTED_WEIGHTS - len(bad)] + chunk.first_row).tolist())
    if n_bad:
        raise StablefitInputError(
            f"--weights {args.weights!r} must be positive and finite on every row; {n_bad} "
            f"are not ({source.schema.format_rows(bad, total=n_bad)}). Correct or fill in "
            "those weights: a new observation's variance is σ²/weight."
        )
    return with_rows(source, rows)


def write_predictions(
    model: Any, source: Source, stream: BinaryIO, alpha: float | None = None, name: str = "-"
) -> UndefinedPredictions:
    """Write one prediction per row (with ``alpha``, also its standard error and the
    confidence and prediction intervals) in the format ``name`` says (see
    :class:`PredictionWriter`); return the rows without one (the first ``LISTED_ROWS`` of
    each kind, with their counts)."""
    from stablefit.solve.prediction import FRAME_COLUMNS, UndefinedPredictions

    counts = [0, 0]
    listed: list[list[int]] = [[], []]
    columns = ("prediction",) if alpha is None else ("prediction", *FRAME_COLUMNS[1:])
    writer = PredictionWriter(stream, columns, name)
    for batch in source.batches():
        if alpha is None:
            values = [np.asarray(model.predict(batch.X), dtype=np.float64)]
        else:
            weights = 1.0 if batch.weights is None else batch.weights
            values = list(model.predict_intervals(batch.X, weights).columns(alpha).values())
        undefined = UndefinedPredictions.of(batch.X, *values)
        for kind, rows in enumerate((undefined.missing, undefined.overflow)):
            counts[kind] += rows.size
            room = LISTED_ROWS - len(listed[kind])
            listed[kind].extend((rows[:room] + batch.first_row).tolist())
        writer.write(values)
    writer.close()
    return UndefinedPredictions(np.array(listed[0]), np.array(listed[1]), *counts)


class PredictionWriter:
    """Columns of numbers written batch by batch, in the format the output's ``name``
    says: Parquet (``.parquet``, ``.pq``), Arrow IPC (Feather: ``.feather``, ``.arrow``,
    ``.ipc``; a stream: ``.arrows``), tab-separated (``.tsv``), compressed by the name's
    ``.gz`` or ``.zst``; CSV otherwise (the standard output too). A value that is not
    finite is missing: an empty cell, or null."""

    def __init__(
        self, stream: BinaryIO, columns: tuple[str, ...] = ("prediction",), name: str = "-"
    ):
        from stablefit.io.formats import ARROW_IPC, FILE_FORMATS, PARQUET, TSV, matching_ending

        self.schema = pa.schema([(column, pa.float64()) for column in columns])
        ending = matching_ending(name)
        format_ = FILE_FORMATS.get(ending) if ending else None
        self.compressed = None
        if ending and ending.endswith((".gz", ".zst")):
            codec = "gzip" if ending.endswith(".gz") else "zstd"
            self.compressed = stream = pa.CompressedOutputStream(stream, codec)
        if format_ == PARQUET:
            import pyarrow.parquet as pq

            self.writer = pq.ParquetWriter(stream, self.schema)
        elif format_ == ARROW_IPC:
            new_writer = pa.ipc.new_stream if ending == ".arrows" else pa.ipc.new_file
            self.writer = new_writer(stream, self.schema)
        else:
            self.writer = pa_csv.CSVWriter(
                stream,
                self.schema,
                write_options=pa_csv.WriteOptions(
                    quoting_style="none",
                    quoting_header="none",
                    delimiter="\t" if format_ == TSV else ",",
                ),
            )

    def write(self, columns: list[np.ndarray]) -> None:
        arrays = [
            pa.array(np.where(np.isfinite(values), values, np.nan), from_pandas=True)
            for values in columns
        ]
        self.writer.write_batch(pa.record_batch(arrays, schema=self.schema))

    def close(self) -> None:
        self.writer.close()
        if self.compressed is not None:
            self.compressed.close()
