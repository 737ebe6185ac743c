"""Hazards of the training precision (float32 by default in Keras and PyTorch): SF131–SF136.

The framework casts the data to the model's dtype. A value beyond its range becomes inf; a value
whose square exceeds it makes the squared error inf; a batch's sum of squares can overflow
where no single square does; far from zero the dtype's spacing (128 near a timestamp of
1.7e9 in float32) can swallow a column's whole variation; and a column whose every value
lies below the dtype's smallest normal number (1.2e-38 in float32) keeps few bits or none.
"""

from __future__ import annotations

import numpy as np

from stablefit.diagnose.checks.common import CheckOptions, column_kind, join_names
from stablefit.diagnose.findings import Finding, format_number
from stablefit.summary import Summary
from stablefit.summary.columns import ROWS_KEPT

# Below this many steps of the dtype's spacing per standard deviation, fewer than four
# significant digits of the column's variation survive the cast.
RESOLUTION_STEPS = 1e4
INT32_SQUARE_LIMIT = 46340  # floor(sqrt(2**31 - 1))
INT64_SQUARE_LIMIT = 3037000499  # floor(sqrt(2**63 - 1))


def _extreme_rows(
    summary: Summary, j: int, threshold: float
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Kept extremes above ``threshold`` in magnitude, their rows, and whether more may exist."""
    values, rows = summary.columns.extremes[j]
    hit = np.abs(values) > threshold
    lower, upper = hit[:ROWS_KEPT], hit[-ROWS_KEPT:]
    saturated = values.size >= 2 * ROWS_KEPT and (lower.all() or upper.all())
    return values[hit], rows[hit], bool(saturated)


def _large_value_findings(
    summary: Summary, options: CheckOptions, code: str, low: float, high: float
) -> list[Finding]:
    dtype = options.dtype
    items = []
    columns = summary.columns
    for j in range(summary.p):
        if not (columns.count[j] and low < columns.max_abs[j]):
            continue
        values, rows, saturated = _extreme_rows(summary, j, low)
        in_band = np.abs(values) <= high
        if not in_band.any():
            continue
        items.append(
            {
                "column": summary.names[j],
                "kind": column_kind(summary, j),
                "count": int(in_band.sum()),
                "at_least": saturated,
                "rows": rows[in_band],
                "values": values[in_band],
                "max_abs": float(np.abs(values[in_band]).max()),
            }
        )
    if not items:
        return []
    described = "; ".join(
        f"{it['column']}: {'at least ' if it['at_least'] else ''}{it['count']} value"
        f"{'s' if it['count'] != 1 else ''} up to {format_number(it['max_abs'])} "
        f"({summary.schema.format_rows(it['rows'])})"
        for it in items[:5]
    )
    limit = format_number(low)
    if code == "SF131":
        title = f"Values beyond the {dtype} range"
        consequence = (
            f"Nothing beyond {limit} fits in {dtype}: the cast to {dtype} turns these values into "
            "inf, and the loss is non-finite at epoch 1"
        )
    else:
        title = f"Values whose squares overflow {dtype}"
        consequence = (
            f"Beyond {limit} a square exceeds the {dtype} range: once a prediction is off by "
            "that much the squared error is inf, and its gradient turns the weights into NaN"
        )
    return [
        Finding(
            code=code,
            severity="error",
            title=title,
            message=f"{described}. {consequence}.",
            evidence={"dtype": dtype, "limit": low, "columns": items},
            fix="Rescale those columns (e.g. a log or a division by a power of ten), or check "
            "the rows for corrupt values.",
        )
    ]


def check_out_of_range(summary: Summary, options: CheckOptions | None = None) -> list[Finding]:
    """SF131: values that the training dtype cannot hold at all."""
    options = options or CheckOptions()
    fmax = float(options.finfo.max)
    return _large_value_findings(summary, options, "SF131", fmax, np.inf)


def check_square_overflow(summary: Summary, options: CheckOptions | None = None) -> list[Finding]:
    """SF132: values whose squares overflow the training dtype."""
    options = options or CheckOptions()
    fmax = float(options.finfo.max)
    return _large_value_findings(summary, options, "SF132", float(np.sqrt(fmax)), fmax)


def check_batch_overflow(summary: Summary, options: CheckOptions | None = None) -> list[Finding]:
    """SF133: sums of squares that overflow the dtype over a batch, or over all rows."""
    options = options or CheckOptions()
    fmax = float(options.finfo.max)
    columns = summary.columns
    items = []
    for j in range(summary.p):
        if not columns.count[j] or columns.max_abs[j] > np.sqrt(fmax):
            continue  # nothing to sum, or already SF131/SF132
        with np.errstate(over="ignore"):
            mean_square = float(columns.mean[j] ** 2 + columns.var[j])
        if mean_square == 0:
            continue
        rows_to_overflow = fmax / mean_square
        if rows_to_overflow < summary.n_rows:
            items.append(
                {
                    "column": summary.names[j],
                    "mean_square": mean_square,
                    "rows_to_overflow": rows_to_overflow,
                    "in_one_batch": rows_to_overflow < options.batch_size,
                }
            )
    if not items:
        return []
    in_batch = [it for it in items if it["in_one_batch"]]
    dtype = options.dtype
    if in_batch:
        what = (
            f"the squares of {join_names([it['column'] for it in in_batch])} summed over a batch "
            f"of {options.batch_size} rows exceed the {dtype} range (about "
            f"{format_number(min(it['rows_to_overflow'] for it in in_batch))} rows suffice): "
            "the batch loss and its gradient overflow to inf"
        )
    else:
        what = (
            f"the squares of {join_names([it['column'] for it in items])} summed over all "
            f"{summary.n_rows} rows exceed the {dtype} range: a {dtype} Gram matrix XᵀX or a "
            "full-data loss is inf"
        )
    return [
        Finding(
            code="SF133",
            severity="warning" if in_batch else "info",
            title=f"Sums of squares overflow {dtype}",
            message=what[0].upper() + what[1:] + ".",
            evidence={"dtype": dtype, "batch_size": options.batch_size, "columns": items},
            fix="Standardize the columns before training.",
        )
    ]


def check_resolution(summary: Summary, options: CheckOptions | None = None) -> list[Finding]:
    """SF134: columns whose variation the dtype's spacing (far from zero) cannot resolve."""
    options = options or CheckOptions()
    dtype = np.dtype(options.dtype)
    fmax = float(options.finfo.max)
    columns = summary.columns
    items = []
    with np.errstate(over="ignore", invalid="ignore"):
        std = columns.std
    for j in range(summary.p):
        if not (columns.count[j] >= 2 and np.isfinite(std[j]) and std[j] > 0):
            continue
        if columns.max_abs[j] > fmax or columns.max_abs[j] < float(options.finfo.tiny):
            continue  # SF131, SF136
        spacing = float(np.spacing(dtype.type(columns.max_abs[j])))
        steps = float(std[j] / spacing)
        if steps < RESOLUTION_STEPS:
            items.append(
                {
                    "column": summary.names[j],
                    "max_abs": float(columns.max_abs[j]),
                    "spacing": spacing,
                    "std": float(std[j]),
                    "steps_per_std": steps,
                }
            )
    if not items:
        return []
    shown = "; ".join(
        f"{it['column']}: values up to {format_number(it['max_abs'])} are rounded to multiples "
        f"of {format_number(it['spacing'])} while the column varies by "
        f"{format_number(it['std'])} (standard deviation)"
        for it in items[:5]
    )
    names = [it["column"] for it in items]
    return [
        Finding(
            code="SF134",
            severity="warning",
            title=f"{options.dtype} cannot resolve a column's variation",
            message=f"{shown}. Fewer than {int(np.log10(RESOLUTION_STEPS))} significant digits "
            f"of the variation survive the cast to {options.dtype}.",
            evidence={"dtype": options.dtype, "columns": items},
            fix=f"Subtract an offset from {join_names(names)} (e.g. its training mean, or the "
            "first timestamp) in float64, before the cast.",
            fix_code="X[:, j] = X[:, j] - X_train[:, j].mean()   # in float64, before training",
        )
    ]


def check_underflow(summary: Summary, options: CheckOptions | None = None) -> list[Finding]:
    """SF136: columns whose every value lies below the dtype's smallest normal number."""
    options = options or CheckOptions()
    normal = float(options.finfo.tiny)
    least = float(options.finfo.smallest_subnormal)
    columns = summary.columns
    items = []
    for j in range(summary.p):
        largest = float(columns.max_abs[j])
        if columns.count[j] and 0 < largest < normal:
            # A subnormal keeps the bits between it and the smallest subnormal.
            bits = max(0, int(np.floor(np.log2(largest / least))) + 1) if largest > 0 else 0
            items.append({"column": summary.names[j], "max_abs": largest, "bits": bits})
    if not items:
        return []
    shown = "; ".join(
        f"{it['column']}: values up to {format_number(it['max_abs'])} keep "
        + (f"at most {it['bits']} significant bits" if it["bits"] else "no bit: they become 0")
        for it in items[:5]
    )
    names = [it["column"] for it in items]
    power = int(np.ceil(-np.log10(min(it["max_abs"] for it in items))))
    return [
        Finding(
            code="SF136",
            severity="warning",
            title=f"Values below {options.dtype}'s normal range",
            message=f"{shown}. Every value of {join_names(names)} lies below "
            f"{options.dtype}'s smallest normal number, {format_number(normal)}: the cast to "
            f"{options.dtype} rounds them to its subnormals, which hold fewer than its 24 "
            f"bits (none below {format_number(least / 2)}).",
            evidence={"dtype": options.dtype, "normal_limit": normal, "columns": items},
            fix=f"Multiply {join_names(names)} by a power of ten (e.g. 1e{power}) in float64, "
            "before the cast, or standardize them.",
            fix_code=f"X[:, j] = X[:, j] * 1e{power}   # in float64, before training",
        )
    ]


def check_integer_range(summary: Summary, options: CheckOptions | None = None) -> list[Finding]:
    """SF135: integer columns beyond the dtype's exact integers, or whose squares overflow."""
    options = options or CheckOptions()
    exact_limit = 2 ** (options.finfo.nmant + 1)
    columns = summary.columns
    items = []
    for j in range(summary.p):
        # Beyond 2**53 every float64 is an integer: "integral" says nothing there.
        if not (columns.count[j] and columns.is_integer[j] and columns.max_abs[j] <= 2.0**53):
            continue
        top = float(columns.max_abs[j])
        hazards = []
        if top > exact_limit:
            hazards.append(f"inexact in {options.dtype}")
        if top > INT64_SQUARE_LIMIT:
            hazards.append("square overflows int64")
        elif top > INT32_SQUARE_LIMIT:
            hazards.append("square overflows int32")
        if hazards:
            items.append({"column": summary.names[j], "max_abs": top, "hazards": hazards})
    if not items:
        return []
    shown = "; ".join(
        f"{it['column']} (up to {format_number(it['max_abs'])}: {', '.join(it['hazards'])})"
        for it in items[:5]
    )
    return [
        Finding(
            code="SF135",
            severity="info",
            title="Large integers",
            message=f"{shown}. {options.dtype} represents integers exactly only up to "
            f"{exact_limit:,}; in NumPy integer arithmetic a square beyond the type's range wraps "
            "around without a warning (e.g. x**2 when building polynomial features).",
            evidence={"dtype": options.dtype, "exact_limit": exact_limit, "columns": items},
            fix="Convert to float64 before any arithmetic, and offset or rescale before training.",
        )
    ]
