"""Outlying values in the features (SF141) and the target (SF142).

A value is outlying when its robust z-score ``|x - median| / (1.4826 · MAD)`` exceeds
``ROBUST_Z``. Only the values the Summary kept with their rows (the smallest and largest of
each column) are examined, which is where outliers are. When more than half of a column's
values are equal its MAD is 0 and the robust z-score is undefined: such columns are skipped.

For a feature, the evidence also gives each row's leverage in the fit on that feature alone,
``1/n + (x - mean)² / Σ(x - mean)²``: adding features can only raise a row's leverage, so it
is a lower bound for the leverage in the full model (near 1: the row alone sets the fit).
"""

from __future__ import annotations

import numpy as np

from stablefit.diagnose.checks.common import CheckOptions, target_index
from stablefit.diagnose.findings import Finding, format_number
from stablefit.summary import Summary

ROBUST_Z = 10.0
MAD_TO_SD = 1.4826
#: A robust loss in each framework: (its name, a line that uses it).
HUBER = {
    "keras": (
        "keras.losses.Huber",
        "model.compile(optimizer=..., loss=keras.losses.Huber(delta=1.0))",
    ),
    "torch": ("torch.nn.HuberLoss", "loss_fn = torch.nn.HuberLoss(delta=1.0)"),
}


def _column_outliers(summary: Summary, j: int, median: float, mad: float) -> dict | None:
    columns = summary.columns
    if not (columns.count[j] >= 3 and np.isfinite(mad) and mad > 0):
        return None
    values, rows = columns.extremes[j]
    with np.errstate(over="ignore"):
        z = np.abs(values - median) / (MAD_TO_SD * mad)
    hit = np.flatnonzero(z > ROBUST_Z)
    if hit.size == 0:
        return None
    hit = hit[np.argsort(-z[hit], kind="stable")]
    item = {
        "column": summary.names[j],
        "median": median,
        "robust_sd": MAD_TO_SD * mad,
        "rows": rows[hit],
        "values": values[hit],
        "robust_z": z[hit],
    }
    if j != target_index(summary):
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            leverage = 1 / columns.count[j] + (values[hit] - columns.mean[j]) ** 2 / columns.m2[j]
        if np.isfinite(leverage).all():
            item["leverage_lower_bound"] = np.minimum(leverage, 1.0)
    return item


def _describe(summary: Summary, item: dict) -> str:
    parts = []
    for k in range(min(3, len(item["rows"]))):
        text = (
            f"{summary.schema.format_rows([item['rows'][k]])}: {format_number(item['values'][k])}"
            f" (robust z {format_number(item['robust_z'][k])}"
        )
        if "leverage_lower_bound" in item:
            text += f", leverage ≥ {item['leverage_lower_bound'][k]:.2f}"
        parts.append(text + ")")
    more = len(item["rows"]) - 3
    tail = f" and {more} more" if more > 0 else ""
    return (
        f"{item['column']} (median {format_number(item['median'])}, robust sd "
        f"{format_number(item['robust_sd'])}): " + ", ".join(parts) + tail
    )


def check_outliers(summary: Summary, options: CheckOptions | None = None) -> list[Finding]:
    """SF141 (features) and SF142 (target): values with robust z above ``ROBUST_Z``."""
    if summary.n_rows < 3 or summary.p == 0 or summary.sketches is None:
        return []  # too few rows, or a Summary built without detail (no medians)
    medians = summary.median()
    mads = summary.mad()
    t = target_index(summary)
    features, target = [], []
    for j in range(summary.p):
        item = _column_outliers(summary, j, float(medians[j]), float(mads[j]))
        if item is not None:
            (target if j == t else features).append(item)
    sketch_note = (
        "" if summary.robust_exact else " (median and MAD from a sketch: approximate ranks)"
    )
    findings = []
    if features:
        findings.append(
            Finding(
                code="SF141",
                severity="warning",
                title="Outliers in the features",
                message="; ".join(_describe(summary, it) for it in features[:5])
                + f"{sketch_note}. The squared error gives such rows a pull that grows with "
                "the square of their distance, and a row with leverage near 1 decides the fit "
                "on its own.",
                evidence={
                    "threshold": ROBUST_Z,
                    "exact": summary.robust_exact,
                    "columns": features,
                },
                fix="Check those rows for entry errors. If they are genuine, scale with a robust "
                "scaler (median and IQR), clip, or use a robust loss such as Huber.",
                fix_code="from sklearn.preprocessing import RobustScaler\n"
                "X = RobustScaler().fit_transform(X)",
            )
        )
    if target:
        huber, huber_code = HUBER[(options or CheckOptions()).framework]
        findings.append(
            Finding(
                code="SF142",
                severity="warning",
                title="Outliers in the target",
                message=_describe(summary, target[0]) + f"{sketch_note}. Each outlying target "
                "adds its squared distance to the loss and dominates the gradient.",
                evidence={"threshold": ROBUST_Z, "exact": summary.robust_exact, **target[0]},
                fix=f"Check those rows; if genuine, use a robust loss ({huber}) or "
                "model a transformed target (e.g. log).",
                fix_code=huber_code,
            )
        )
    return findings
