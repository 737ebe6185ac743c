"""Missing and non-finite values, empty columns and rows, no target (SF101–SF104, SF106)."""

from __future__ import annotations

import numpy as np

from stablefit.diagnose.checks.common import CheckOptions, join_names, target_index
from stablefit.diagnose.findings import Finding
from stablefit.summary import Summary

DROP_ROWS_CODE = """\
import numpy as np
keep = np.isfinite(X).all(axis=1) & np.isfinite(y)   # rows with no NaN and no inf
X, y = X[keep], y[keep]"""


def _bad_values(summary: Summary, j: int) -> dict:
    columns = summary.columns
    rows = np.union1d(columns.nan_rows[j], columns.inf_rows[j])[:20]
    return {
        "column": summary.names[j],
        "n_nan": int(columns.n_nan[j]),
        "n_inf": int(columns.n_inf[j]),
        "rows": rows,
    }


def _describe(summary: Summary, item: dict) -> str:
    kinds = []
    if item["n_nan"]:
        kinds.append(f"{item['n_nan']} NaN")
    if item["n_inf"]:
        kinds.append(f"{item['n_inf']} inf")
    where = summary.schema.format_rows(item["rows"], total=item["n_nan"] + item["n_inf"])
    return f"{item['column']} ({' and '.join(kinds)}: {where})"


def check_nonfinite(summary: Summary, options: CheckOptions | None = None) -> list[Finding]:
    """SF101 (features) and SF102 (target): NaN or inf values, by column and row."""
    columns = summary.columns
    bad = np.flatnonzero((columns.n_nan + columns.n_inf) > 0)
    t = target_index(summary)
    findings = []
    groups = (
        ("SF101", "features", [j for j in bad if j != t]),
        ("SF102", "target", [j for j in bad if j == t]),
    )
    for code, kind, indices in groups:
        if not indices:
            continue
        items = [_bad_values(summary, j) for j in indices]
        described = "; ".join(_describe(summary, item) for item in items[:5])
        more = f"; and {len(items) - 5} more columns" if len(items) > 5 else ""
        title = "NaN or inf in the " + kind
        findings.append(
            Finding(
                code=code,
                severity="error",
                title=title,
                message=(
                    f"{described}{more}. A row with NaN or inf makes the loss of its batch "
                    "non-finite, and the update that follows turns every weight into NaN: "
                    "training on these rows shows `loss: nan` at epoch 1."
                ),
                evidence={"columns": items},
                fix=(
                    "Drop or impute those rows before training (stablefit.fit(..., "
                    "missing='drop') does it for the exact fit)."
                ),
                fix_code=DROP_ROWS_CODE,
            )
        )
    return findings


def check_empty_columns(summary: Summary, options: CheckOptions | None = None) -> list[Finding]:
    """SF103: a column with no finite value at all, so no row is complete."""
    if summary.n_rows == 0:
        return []
    empty = [summary.names[j] for j in np.flatnonzero(summary.columns.count == 0)]
    if not empty:
        return []
    return [
        Finding(
            code="SF103",
            severity="error",
            title="Column with no finite value",
            message=(
                f"{join_names(empty)} {'has' if len(empty) == 1 else 'have'} no finite value in "
                f"any of the {summary.n_rows} rows, so no row can be used for training."
            ),
            evidence={"columns": empty, "n_rows": summary.n_rows},
            fix="Drop the column, or fix how it is read (a wrong delimiter, a text column).",
        )
    ]


def check_no_complete_rows(summary: Summary, options: CheckOptions | None = None) -> list[Finding]:
    """SF104: no row has every column finite (or there are no rows)."""
    n = summary.n_rows
    if summary.n_complete > 0:
        return []
    message = (
        "The data has no rows."
        if n == 0
        else f"Every one of the {n} rows holds a NaN or inf in some column, so no row "
        "can be used for training or fitting."
    )
    return [
        Finding(
            code="SF104",
            severity="error",
            title="No complete rows",
            message=message,
            evidence={"n_rows": n, "n_complete_rows": 0},
            fix="Drop the columns that are mostly missing, or impute the missing values.",
        )
    ]


def check_target_present(summary: Summary, options: CheckOptions | None = None) -> list[Finding]:
    """SF106: without a target only the data checks run."""
    if summary.has_target:
        return []
    return [
        Finding(
            code="SF106",
            severity="info",
            title="No target",
            message="No target was given, so only the data checks ran: no training forecast.",
            evidence={"n_features": summary.n_features},
            fix="Name the target column (--target COL, or target= / y= in Python).",
        )
    ]
