"""Scales: spread of feature scales, offsets far from zero, the target's scale (SF121–SF123).

Gradient descent on the mean squared error converges at a rate set by the condition number
of its Hessian ``(2/n) AᵀA``; a spread of feature scales by a factor k, or a column whose
mean is k standard deviations from zero next to a bias, puts about k² into it.
"""

from __future__ import annotations

import numpy as np

from stablefit.diagnose.checks.common import CheckOptions, join_names, target_index
from stablefit.diagnose.findings import Finding, format_number, format_square
from stablefit.summary import Summary

SCALE_SPREAD = 100.0
OFFSET_RATIO = 100.0
TARGET_SCALE = 1e3

STANDARDIZE_CODE = """\
from sklearn.preprocessing import StandardScaler
scaler = StandardScaler().fit(X_train)      # fit on the training rows only
X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)"""

TARGET_CODE = """\
y_mean, y_std = y_train.mean(), y_train.std()
model.fit(X_train, (y_train - y_mean) / y_std, ...)
predictions = model.predict(X_test) * y_std + y_mean"""


def _varying_features(summary: Summary) -> list[int]:
    columns = summary.columns
    with np.errstate(over="ignore", invalid="ignore"):
        std = columns.std
    return [
        j
        for j in range(summary.n_features)
        if columns.count[j] >= 2 and np.isfinite(std[j]) and std[j] > 0
    ]


def check_scale_spread(summary: Summary, options: CheckOptions | None = None) -> list[Finding]:
    """SF121: the largest feature standard deviation over the smallest."""
    varying = _varying_features(summary)
    if len(varying) < 2:
        return []
    std = summary.columns.std
    big = max(varying, key=lambda j: std[j])
    small = min(varying, key=lambda j: std[j])
    ratio = float(std[big] / std[small])
    if ratio < SCALE_SPREAD:
        return []
    names = summary.names
    return [
        Finding(
            code="SF121",
            severity="warning",
            title="Feature scales differ widely",
            message=f"The standard deviation of {names[big]} ({format_number(std[big])}) is "
            f"{format_number(ratio)} times that of {names[small]} ({format_number(std[small])}). "
            f"Gradient steps small enough for {names[big]} barely move the weight of "
            f"{names[small]}: the loss's curvature differs by about {format_square(ratio)} "
            "between the two directions.",
            evidence={
                "ratio": ratio,
                "largest": names[big],
                "smallest": names[small],
                "std": {names[j]: float(std[j]) for j in varying},
            },
            fix="Standardize the features (fit the scaler on the training rows only).",
            fix_code=STANDARDIZE_CODE,
        )
    ]


def check_offsets(summary: Summary, options: CheckOptions | None = None) -> list[Finding]:
    """SF122: columns whose mean lies many standard deviations away from zero."""
    options = options or CheckOptions()
    if not options.intercept:
        return []
    columns = summary.columns
    far = [
        j
        for j in _varying_features(summary)
        if abs(columns.mean[j]) >= OFFSET_RATIO * columns.std[j]
    ]
    if not far:
        return []
    names = [summary.names[j] for j in far]
    ratios = {summary.names[j]: float(abs(columns.mean[j]) / columns.std[j]) for j in far}
    shown = ", ".join(
        f"{summary.names[j]} (mean {format_number(columns.mean[j])}, standard deviation "
        f"{format_number(columns.std[j])})"
        for j in far[:5]
    )
    return [
        Finding(
            code="SF122",
            severity="warning",
            title="Columns far from zero",
            message=f"{shown}: next to the bias, a column offset by k standard deviations makes "
            "the weight and the bias pull against each other, and gradient descent crawls "
            f"(curvature ratio about k², here up to {format_square(max(ratios.values()))}).",
            evidence={"columns": names, "mean_over_std": ratios},
            fix=f"Center {join_names(names)} (subtract the training mean), or standardize.",
            fix_code=STANDARDIZE_CODE,
        )
    ]


def check_target_scale(summary: Summary, options: CheckOptions | None = None) -> list[Finding]:
    """SF123: a target whose typical magnitude is large."""
    t = target_index(summary)
    if t is None or summary.columns.count[t] == 0:
        return []
    columns = summary.columns
    with np.errstate(over="ignore"):
        rms = float(np.sqrt(columns.mean[t] ** 2 + columns.var[t]))
    if not rms >= TARGET_SCALE:
        return []
    name = summary.names[t]
    return [
        Finding(
            code="SF123",
            severity="warning",
            title="Large target scale",
            message=f"The target {name} has mean {format_number(columns.mean[t])} and standard "
            f"deviation {format_number(columns.std[t])}. Starting from the small initial "
            f"weights, the first losses are about {format_square(rms)}; adaptive optimizers "
            "(Adam, RMSprop) move each weight by about the learning rate per step, so reaching "
            f"a scale of {format_number(rms)} takes about {format_number(rms)}/lr steps.",
            evidence={"column": name, "mean": columns.mean[t], "std": columns.std[t], "rms": rms},
            fix="Standardize the target for training and undo it on the predictions.",
            fix_code=TARGET_CODE,
        )
    ]
